"""Training and configuration values that must not give a silently wrong run: every recipe field, model override
and config value checked where it is read, and training that cannot learn stopped with a clear error."""

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from safetensors.torch import load_file
from tiny_data import TINY_MODEL_OVERRIDES, tiny_recipe_fields, write_tiny_image_splits

from modeling_illama import ILlamaConfig, ILlamaForImageClassification
from modeling_illama.training.evaluation import evaluate_model
from modeling_illama.training.guards import TrainingCannotLearnError, TrainingGuard, check_finite_logits
from modeling_illama.training.metrics import compute_classification_metrics
from modeling_illama.training.recipes import list_recipes, load_recipe, recipe_from_dict
from modeling_illama.training.tasks import build_training


def recipe(**changes):
    return recipe_from_dict(tiny_recipe_fields(changes.pop("model_overrides", TINY_MODEL_OVERRIDES), **changes))


def test_every_shipped_recipe_passes_the_checks():
    for name in list_recipes():
        load_recipe(name)


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("learning_rate", -0.1, "> 0"),
        ("learning_rate", 0, "> 0"),
        ("learning_rate", float("nan"), "finite number > 0"),
        ("num_train_epochs", 0, r"> 0 \(or set max_steps > 0\)"),
        ("max_steps", 0, r"> 0 \(or -1"),
        ("weight_decay", -1e-4, ">= 0"),
        ("label_smoothing", 1.0, r"in \[0, 1\)"),
        ("mixup_prob", 1.5, r"in \[0, 1\]"),
        ("random_erasing", -0.25, r"in \[0, 1\]"),
        ("eval_crop_pct", 0.0, r"in \(0, 1\]"),
        ("per_device_train_batch_size", 0, ">= 1"),
        ("global_batch_size", 0, ">= 1"),
        ("save_total_limit", 0, r">= 1 \(null keeps every checkpoint\)"),
        ("dataloader_num_workers", -1, ">= 0"),
        ("drop_path_rate", 1.0, r"in \[0, 1\)"),
        ("warmup_epochs", -1, ">= 0"),
        ("crop_scale", [0.9, 0.1], r"0 < low <= high <= 1"),
        ("learning_rate", True, "finite number > 0"),
    ],
)
def test_recipe_values_out_of_range_are_refused_naming_field_value_and_rule(field, value, rule):
    with pytest.raises(ValueError, match=rf"'{field}' must be (a finite number )?.*{rule}.*got"):
        recipe(**{field: value})


def test_zero_epochs_are_fine_when_max_steps_decides():
    assert recipe(num_train_epochs=0, max_steps=3).max_steps == 3


def test_a_model_override_typo_gets_did_you_mean_and_stops_before_any_file_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model_overrides field\(s\) \['num_hidden_layer'\].*did you mean "):
        load_recipe("cifar10-mini", ["model_overrides.num_hidden_layer=1"], output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"'hiden_size': did you mean \['hidden_size'"):
        recipe(model_overrides={**TINY_MODEL_OVERRIDES, "hiden_size": 8})
    assert (
        recipe(model_overrides={**TINY_MODEL_OVERRIDES, "soft_mask_rate": 0.5}).model_overrides["soft_mask_rate"]
        == 0.5
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hidden_size": -64}, r"hidden_size must be a positive integer, got -64"),
        ({"num_hidden_layers": 0}, r"num_hidden_layers must be a positive integer, got 0"),
        ({"hidden_size": 64, "num_attention_heads": 3}, r"divisible by num_attention_heads"),
        ({"soft_mask_rate": 1.5}, r"soft_mask_rate must lie in \[0, 1\], got 1.5"),
        ({"drop_path_rate": -0.1}, r"drop_path_rate must lie in \[0, 1\)"),
        ({"image_size": 30, "patch_size": 8}, r"positive multiple of patch_size"),
        ({"rms_norm_eps": 0.0}, r"rms_norm_eps must be positive"),
    ],
)
def test_config_values_are_checked(fields, message):
    with pytest.raises((ValueError, StrictDataclassClassValidationError), match=message):
        ILlamaConfig(**{"image_size": 32, "patch_size": 8, "hidden_size": 64, "num_attention_heads": 2, **fields})


def test_config_types_are_checked():
    with pytest.raises(StrictDataclassFieldValidationError, match="Field 'hidden_size' expected int, got str"):
        ILlamaConfig(hidden_size="64")


# ------------------------------------------------------------------ training that cannot learn


def state(max_steps=10, global_step=0, epoch=0.0):
    return SimpleNamespace(max_steps=max_steps, global_step=global_step, epoch=epoch)


def test_a_run_of_zero_steps_is_an_error():
    args = SimpleNamespace(num_train_epochs=0, max_steps=-1)
    with pytest.raises(TrainingCannotLearnError, match=r"0 optimizer steps .*nothing would be trained"):
        TrainingGuard().on_train_begin(args, state(max_steps=0), None)


def test_a_diverging_run_stops_before_saving_a_nan_checkpoint(tmp_path):
    data = write_tiny_image_splits(tmp_path / "data", n_train=16, n_test=4)
    run = build_training(
        recipe(
            dataset=str(data),
            output_dir=str(tmp_path / "out"),
            learning_rate=1e30,  # the weights overflow within a few steps
            lr_scheduler_type="constant",
            lr_scheduler_kwargs={},
            warmup_epochs=0,
            max_grad_norm=0.0,
            num_train_epochs=4,
            save_strategy="steps",
            save_steps=1,
            save_total_limit=None,
            eval_strategy="no",
            soft_mask="none",
        )
    )
    with pytest.raises(TrainingCannotLearnError, match=r"non-finite \(nan or inf\) at optimizer step \d+.*not saved"):
        run.trainer.train()
    saved = sorted((tmp_path / "out").glob("checkpoint-*"))
    assert not (tmp_path / "out" / "model.safetensors").exists()
    for folder in saved:  # every checkpoint that was written holds finite weights
        weights = load_file(folder / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), folder.name


def test_a_training_set_with_no_decodable_image_is_an_error(tmp_path):
    data = write_tiny_image_splits(tmp_path / "data", n_train=8, n_test=4, broken=range(8))
    run = build_training(
        recipe(dataset=str(data), output_dir=str(tmp_path / "out"), eval_strategy="no", save_strategy="no")
    )
    with pytest.raises(
        TrainingCannotLearnError, match=r"no image of the first epoch could be decoded \(8 undecodable"
    ):
        run.trainer.train()


def test_metrics_on_non_finite_logits_are_refused():
    logits = np.array([[0.1, 0.9], [np.nan, 0.0], [np.inf, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\) \(nan or inf\) in 2 of 3 image"):
        compute_classification_metrics(SimpleNamespace(predictions=logits, label_ids=np.array([1, 0, 0])))
    check_finite_logits(torch.zeros(2, 3))

    model = ILlamaForImageClassification(
        ILlamaConfig(image_size=16, patch_size=8, hidden_size=32, num_attention_heads=1, num_hidden_layers=1)
    ).eval()
    with torch.no_grad():
        model.classifier.weight.fill_(math.nan)
    batch = {"pixel_values": torch.zeros(2, 3, 16, 16), "labels": torch.tensor([0, 1]), "num_undecodable": 0}
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_model(model, [batch], "cpu", None, 2, False)
    assert os.environ.get("ILLAMA_DEBUG", "") in ("", "0")
