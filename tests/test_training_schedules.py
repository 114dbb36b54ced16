"""Soft-mask schedule, learning-rate schedule and AdamW groups against arithmetic written out here."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from modeling_illama import ILlamaForImageClassification, load_preset
from modeling_illama.training.optim import create_adamw, create_warmup_cosine_scheduler, warmup_cosine_lr
from modeling_illama.training.soft_mask import SoftMaskCallback, cutoff_in_steps, soft_mask_rate


def test_constant_schedule_is_one_before_the_cutoff_and_zero_after():
    # authors: np.full(cutoff_epoch * niter_per_ep, 1) then zeros; cutoff 2 epochs x 5 steps, 6 epochs total
    expected = [1.0] * 10 + [0.0] * 20
    assert [soft_mask_rate(s, "constant", 10) for s in range(30)] == expected


def test_linear_schedule_is_linspace_one_to_zero_over_the_cutoff():
    # np.linspace(1, 0, 5) = 1, .75, .5, .25, 0 then zeros
    got = [soft_mask_rate(s, "linear", 5) for s in range(8)]
    assert got == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0])
    # a longer one against numpy directly
    table = np.concatenate([np.linspace(1.0, 0.0, 37), np.zeros(13)])
    assert [soft_mask_rate(s, "linear", 37) for s in range(50)] == pytest.approx(table.tolist(), abs=1e-12)


def test_no_soft_mask_is_causal_throughout_and_bad_input_is_rejected():
    assert all(soft_mask_rate(s, "none", 100) == 0.0 for s in range(120))
    assert soft_mask_rate(0, "constant", 0) == 0.0  # a zero cutoff never turns the soft mask on
    with pytest.raises(ValueError, match="schedule must be one of"):
        soft_mask_rate(0, "cosine", 10)
    with pytest.raises(ValueError, match="step must be >= 0"):
        soft_mask_rate(-1, "linear", 10)


def test_cutoff_in_steps_converts_epochs_like_the_authors_table_length():
    assert cutoff_in_steps(50, 312) == 15600
    assert cutoff_in_steps(2, 80) == 160
    assert cutoff_in_steps(0.5, 7) == 3  # floor of 3.5


def test_callback_state_round_trips_through_trainer_export():
    callback = SoftMaskCallback("linear", 11)
    exported = callback.state()
    restored = SoftMaskCallback.from_state(exported)
    assert (restored.schedule, restored.cutoff_steps, restored.rate) == ("linear", 11, 1.0)


def test_callback_sets_the_model_rate_per_step_resumes_from_the_step_and_restores_the_deployed_rate(tmp_path):
    config = load_preset(
        "illama-tiny-224", hidden_size=32, num_attention_heads=1, num_hidden_layers=1, image_size=16, patch_size=8
    )
    model = ILlamaForImageClassification(config)
    callback = SoftMaskCallback("linear", 5)
    state = SimpleNamespace(global_step=0)
    callback.on_train_begin(None, state, None, model=model)
    assert model.soft_mask_rate == 1.0
    for step in range(3):
        state.global_step = step
        callback.on_step_begin(None, state, None, model=model)
        assert model.illama.soft_mask_rate == pytest.approx(1.0 - step / 4)
    assert model.config.soft_mask_rate == 0.0  # the config is never written during training
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["soft_mask_rate"] == 0.0
    resumed = SoftMaskCallback.from_state(callback.state())
    resumed.on_train_begin(None, SimpleNamespace(global_step=3), None, model=model)  # a resumed run
    assert model.soft_mask_rate == pytest.approx(0.25)
    resumed.on_train_end(None, state, None, model=model)
    assert model.soft_mask_rate == 0.0 and resumed.rate == 0.0


def test_warmup_cosine_matches_the_authors_per_step_table():
    base, final, warmup, total = 4e-3, 1e-6, 4, 20
    # written out as in their cosine_scheduler: linspace(0, base, warmup) then a half cosine over the rest
    warm = [0.0, base / 3, 2 * base / 3, base]
    rest = [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / 16)) for i in range(16)]
    expected = warm + rest
    assert [warmup_cosine_lr(s, base, final, warmup, total) for s in range(total)] == pytest.approx(expected)
    assert warmup_cosine_lr(25, base, final, warmup, total) == pytest.approx(final)  # past the end: min lr
    assert warmup_cosine_lr(0, base, final, 0, total) == pytest.approx(base)  # no warmup starts at the peak


def test_scheduler_drives_the_optimizer_step_by_step():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [weight], "weight_decay": 0.0}], lr=1e-3)
    scheduler = create_warmup_cosine_scheduler(optimizer, 1e-3, 1e-5, warmup_steps=3, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.0, 0.5e-3, 1e-3] + [1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * i / 7)) for i in range(7)]
    assert seen == pytest.approx(expected)


def test_adamw_groups_exclude_1d_params_position_embeddings_and_cls_token():
    config = load_preset(
        "illama-tiny-224",
        hidden_size=32,
        num_attention_heads=1,
        num_hidden_layers=2,
        image_size=16,
        patch_size=8,
        num_labels=3,
    )
    model = ILlamaForImageClassification(config)
    optimizer = create_adamw(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    expected_plain = {
        n
        for n, p in model.named_parameters()
        if p.ndim == 1 or n.endswith("position_embeddings") or n.endswith("cls_token")
    }
    assert plain_names == expected_plain
    assert "illama.embeddings.position_embeddings" in plain_names and "illama.embeddings.cls_token" in plain_names
    assert "classifier.bias" in plain_names and "illama.norm.weight" in plain_names
    assert "classifier.weight" in decayed_names and "illama.layers.0.self_attn.qkv_proj.weight" in decayed_names
    assert len(decayed_names) + len(plain_names) == len(list(model.parameters()))
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
