"""Recipes load from YAML with the paper's numbers (docs/DESIGN.md, training recipes); overrides and bad input."""

import pytest

from modeling_illama.training.recipes import list_recipes, load_recipe, parse_overrides


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
    assert (r.warmup_epochs, r.mixup, r.cutmix, r.drop_path_rate, r.soft_mask, r.soft_mask_cutoff_epochs) == (
        warmup,
        mixup,
        cutmix,
        drop_path,
        schedule,
        cutoff,
    )
    # shared by the three
    assert (r.epochs, r.batch_size, r.learning_rate, r.min_lr, r.weight_decay) == (300, 4096, 4e-3, 1e-6, 0.05)
    assert r.adam_betas == (0.9, 0.999) and r.adam_eps == 1e-8 and r.max_grad_norm == 0.0
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
    assert (r.epochs, r.warmup_epochs, r.weight_decay, r.batch_size) == (30, 0, 1e-8, 512)
    assert (r.mixup, r.cutmix, r.label_smoothing, r.soft_mask) == (0.0, 0.0, 0.1, "none")


def test_imagenet_21k_pretraining_recipe():
    r = load_recipe("illama-base-in21k")
    assert (r.epochs, r.warmup_epochs, r.learning_rate, r.weight_decay, r.drop_path_rate) == (90, 5, 1e-3, 0.01, 0.1)
    assert (r.mixup, r.cutmix, r.soft_mask, r.soft_mask_cutoff_epochs) == (0.8, 1.0, "constant", 30)


def test_overrides_are_parsed_as_yaml_and_merge_nested_fields(tmp_path):
    assert parse_overrides(["epochs=3", "rand_augment=null", "crop_scale=[0.5, 1.0]", "soft_mask=linear"]) == {
        "epochs": 3,
        "rand_augment": None,
        "crop_scale": [0.5, 1.0],
        "soft_mask": "linear",
    }
    r = load_recipe("cifar10-mini", ["learning_rate=2e-3", "model_overrides.num_hidden_layers=2", "eval_strategy=no"])
    assert r.learning_rate == 2e-3 and r.eval_strategy == "no"
    assert r.model_overrides == {"image_size": 32, "patch_size": 4, "num_hidden_layers": 2}
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 2\nbatch_size: 8\nper_device_batch_size: 4\nsave_strategy: no\n")
    r = load_recipe(str(path))
    assert (r.epochs, r.gradient_accumulation_steps(1), r.gradient_accumulation_steps(2), r.save_strategy) == (
        2,
        2,
        1,
        "no",
    )


def test_bad_recipes_give_specific_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(ValueError, match=r"unknown recipe field\(s\) \['learning_rat'\]"):
        load_recipe("cifar10-mini", ["learning_rat=1"])
    with pytest.raises(ValueError, match="must look like key=value"):
        load_recipe("cifar10-mini", ["epochs"])
    with pytest.raises(ValueError, match="'soft_mask' must be one of"):
        load_recipe("cifar10-mini", ["soft_mask=cosine"])
    with pytest.raises(ValueError, match="multiple of per_device_batch_size"):
        load_recipe("cifar10-mini", ["batch_size=100", "per_device_batch_size=64"])
    with pytest.raises(ValueError, match="not divisible"):
        load_recipe("cifar10-mini", ["batch_size=64", "per_device_batch_size=32"]).gradient_accumulation_steps(3)
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        load_recipe(str(path))
