"""Recipes load from YAML with the paper's numbers (docs/DESIGN.md, training recipes); overrides and bad input."""

import pytest
from transformers import TrainingArguments

from modeling_illama.training.recipes import ILlamaTrainingArguments, list_recipes, load_recipe, parse_overrides


def test_every_named_recipe_loads():
    names = list_recipes()
    for required in (
        "illama-tiny-in1k",
        "illama-small-in1k",
        "illama-base-in1k",
        "illama-base-in21k",
        "illama-large-in21k",
        "illama-base-in1k-384",
        "illama-base-in21kin1k-224",
        "illama-base-in21kin1k-384",
        "illama-large-in21kin1k-224",
        "illama-large-in21kin1k-384",
        "cifar10",
        "cifar100",
        "cifar10-mini",
    ):
        assert required in names
    for name in names:
        load_recipe(name)


@pytest.mark.parametrize(
    "name, warmup, mixup, cutmix, drop_path, schedule, cutoff",
    [
        ("illama-tiny-in1k", 5, 0.1, 0.1, 0.0, "constant", 50),
        ("illama-small-in1k", 5, 0.5, 0.5, 0.1, "linear", 50),
        ("illama-base-in1k", 50, 0.95, 1.0, 0.4, "linear", 25),
    ],
)
def test_imagenet_from_scratch_recipes_follow_the_spec_table(name, warmup, mixup, cutmix, drop_path, schedule, cutoff):
    r = load_recipe(name)
    assert isinstance(r, TrainingArguments)
    assert (r.warmup_epochs, r.mixup, r.cutmix, r.drop_path_rate, r.soft_mask, r.soft_mask_cutoff_epochs) == (
        warmup,
        mixup,
        cutmix,
        drop_path,
        schedule,
        cutoff,
    )
    # shared by the three
    assert (r.num_train_epochs, r.global_batch_size, r.learning_rate, r.weight_decay) == (300, 4096, 4e-3, 0.05)
    assert r.lr_scheduler_type == "cosine_with_min_lr" and r.lr_scheduler_kwargs == {"min_lr": 1e-6}
    assert (r.adam_beta1, r.adam_beta2, r.adam_epsilon, r.max_grad_norm) == (0.9, 0.999, 1e-8, 0.0)
    # the authors' protocol: the best epoch by top-1; EMA and layer decay off (their released runs used neither)
    assert r.load_best_model_at_end and r.metric_for_best_model == "top1" and r.greater_is_better
    assert not r.model_ema and r.layer_decay is None
    assert r.dataset == "ILSVRC/imagenet-1k"
    assert r.rand_augment == "rand-m9-mstd0.5-inc1" and r.label_smoothing == 0.1 and r.random_erasing == 0.25
    assert r.crop_scale == (0.08, 1.0) and r.interpolation == "bicubic" and r.mixup_switch_prob == 0.5
    assert not (r.bf16 or r.fp16)


@pytest.mark.parametrize(
    "name, lr, drop_path, size",
    [
        ("illama-base-in1k-384", 8e-5, 0.8, 384),
        ("illama-base-in21kin1k-224", 8e-5, 0.2, 224),
        ("illama-base-in21kin1k-384", 1.1e-4, 0.2, 384),
        ("illama-large-in21kin1k-224", 6e-5, 0.3, 224),
        ("illama-large-in21kin1k-384", 3.5e-5, 0.3, 384),
    ],
)
def test_fine_tuning_recipes_follow_the_spec(name, lr, drop_path, size):
    r = load_recipe(name)
    assert (r.learning_rate, r.drop_path_rate, r.image_size) == (lr, drop_path, size)
    assert (r.num_train_epochs, r.warmup_epochs, r.weight_decay, r.global_batch_size) == (30, 0, 1e-8, 512)
    assert r.load_best_model_at_end and r.metric_for_best_model == "top1"
    assert (r.mixup, r.cutmix, r.label_smoothing, r.soft_mask) == (0.0, 0.0, 0.1, "none")


def test_imagenet_21k_pretraining_recipe():
    r = load_recipe("illama-base-in21k")
    assert (r.num_train_epochs, r.warmup_epochs, r.learning_rate, r.weight_decay, r.drop_path_rate) == (
        90,
        5,
        1e-3,
        0.01,
        0.1,
    )
    assert (r.mixup, r.cutmix, r.soft_mask, r.soft_mask_cutoff_epochs) == (0.8, 1.0, "constant", 30)


def test_overrides_are_parsed_as_yaml_and_merge_nested_fields(tmp_path):
    assert parse_overrides(
        ["num_train_epochs=3", "rand_augment=null", "crop_scale=[0.5, 1.0]", "soft_mask=linear"]
    ) == {
        "num_train_epochs": 3,
        "rand_augment": None,
        "crop_scale": [0.5, 1.0],
        "soft_mask": "linear",
    }
    r = load_recipe("cifar10-mini", ["learning_rate=2e-3", "model_overrides.num_hidden_layers=2", "eval_strategy=no"])
    assert r.learning_rate == 2e-3 and r.eval_strategy == "no"
    assert r.model_overrides["num_hidden_layers"] == 2 and r.model_overrides["patch_size"] == 4
    path = tmp_path / "mine.yaml"
    path.write_text("num_train_epochs: 2\nglobal_batch_size: 8\nper_device_train_batch_size: 4\nsave_strategy: no\n")
    r = load_recipe(str(path))
    assert (r.num_train_epochs, r.gradient_accumulation_for(1), r.gradient_accumulation_for(2), r.save_strategy) == (
        2,
        2,
        1,
        "no",
    )


def test_any_training_arguments_field_reaches_the_recipe_from_yaml_or_the_command_line(tmp_path):
    """Fields the old recipe class did not know: tracking, Hub, checkpointing, compile, optimizer, schedule."""
    r = load_recipe(
        "cifar10-mini",
        [
            "report_to=tensorboard",
            "push_to_hub=true",
            "hub_model_id=me/illama-mini",
            "activation_checkpointing=true",
            "torch_compile=true",
            "optim=sgd",
            "lr_scheduler_type=linear",
            "metric_for_best_model=top5",
        ],
    )
    assert r.report_to == ["tensorboard"] and r.push_to_hub and r.hub_model_id == "me/illama-mini"
    assert r.activation_checkpointing and r.torch_compile and r.optim == "sgd" and r.lr_scheduler_type == "linear"
    assert r.metric_for_best_model == "top5"
    path = tmp_path / "tracked.yaml"
    path.write_text("model: illama-tiny-224\nreport_to: [tensorboard]\nlogging_strategy: steps\nseed: 3\n")
    r = load_recipe(str(path))
    assert isinstance(r, ILlamaTrainingArguments) and r.report_to == ["tensorboard"] and r.seed == 3


def test_unknown_keys_name_their_source(tmp_path):
    with pytest.raises(ValueError, match=r"\['learning_rat'\] in the command-line overrides.*did you mean"):
        load_recipe("cifar10-mini", ["learning_rat=1"])
    path = tmp_path / "typo.yaml"
    path.write_text("model: illama-tiny-224\nreport_too: tensorboard\n")
    with pytest.raises(ValueError, match=r"\['report_too'\] in recipe file .*typo.yaml.*'report_to'"):
        load_recipe(str(path), ["report_to=tensorboard"])


def test_a_recipe_names_its_default_data_set_and_the_command_line_overrides_it():
    assert load_recipe("cifar10-mini").dataset == "data/cifar10-mini"
    assert load_recipe("cifar10").dataset == "uoft-cs/cifar10"
    assert load_recipe("illama-tiny-in1k").dataset == "ILSVRC/imagenet-1k"
    assert load_recipe("cifar10-mini", {"dataset": "elsewhere/data"}).dataset == "elsewhere/data"


def test_bad_recipes_give_specific_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(ValueError, match="must look like key=value"):
        load_recipe("cifar10-mini", ["num_train_epochs"])
    with pytest.raises(ValueError, match="'soft_mask' must be one of"):
        load_recipe("cifar10-mini", ["soft_mask=cosine"])
    with pytest.raises(ValueError, match="must be a multiple of per_device_train_batch_size"):
        load_recipe("cifar10-mini", ["global_batch_size=100", "per_device_train_batch_size=64"])
    with pytest.raises(ValueError, match="not divisible"):
        load_recipe(
            "cifar10-mini", ["global_batch_size=64", "per_device_train_batch_size=32"]
        ).gradient_accumulation_for(3)
    with pytest.raises(ValueError, match="'learning_rate' must be a number"):
        load_recipe("cifar10-mini", ["learning_rate=fast"])
    with pytest.raises(ValueError, match="model_ema_eval / model_ema_save need model_ema"):
        load_recipe("cifar10-mini", ["model_ema_eval=true"])
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        load_recipe(str(path))


def test_exponent_numbers_in_nested_fields_are_numbers(tmp_path):
    """YAML 1.1 reads `1e-5` (no dot) as a string, also inside mappings such as lr_scheduler_kwargs."""
    path = tmp_path / "exp.yaml"
    path.write_text(
        "model: illama-tiny-224\nlr_scheduler_type: cosine_with_min_lr\nlr_scheduler_kwargs: {min_lr: 1e-5}\n"
        "model_overrides: {rms_norm_eps: 1e-6}\n"
    )
    r = load_recipe(str(path), ["model_overrides.mask_style=renormalized"])
    assert r.lr_scheduler_kwargs == {"min_lr": 1e-5} and isinstance(r.lr_scheduler_kwargs["min_lr"], float)
    assert r.model_overrides == {"rms_norm_eps": 1e-6, "mask_style": "renormalized"}
