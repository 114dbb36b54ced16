"""Soft-mask schedule, learning-rate schedule and AdamW groups against arithmetic written out here."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_data import TINY_MODEL_OVERRIDES
from transformers import get_scheduler

from modeling_illama import ILlamaForImageClassification, load_preset
from modeling_illama.training.optim import optimizer_param_groups
from modeling_illama.training.recipes import load_recipe
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
    config = load_preset("illama-tiny-224", **TINY_MODEL_OVERRIDES)
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


def authors_lr_table(base, final, warmup, total):
    """The authors' cosine_scheduler (utils.py of their repository), per optimizer step."""
    warm = np.linspace(0.0, base, warmup) if warmup > 0 else np.array([])
    iters = np.arange(total - warmup)
    rest = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate([warm, rest])


def stock_lr_table(base, final, warmup, total):
    """Transformers' cosine_with_min_lr, stepped as Trainer steps it."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = get_scheduler(
        "cosine_with_min_lr", optimizer, warmup, total, scheduler_specific_kwargs={"min_lr": final}
    )
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(seen)


@pytest.mark.parametrize(
    "name, steps_per_epoch", [("illama-tiny-in1k", 312), ("illama-base-in21k", 2700), ("cifar10-mini", 80)]
)
def test_stock_schedule_differs_from_the_authors_only_during_warmup_by_at_most_lr_over_w(name, steps_per_epoch):
    """Why the recipes use Transformers' scheduler: the authors' table reaches the peak one step earlier
    (linspace(0, lr, W) vs lr * s / W), so the two differ by at most lr / W during warm-up and not at all after."""
    r = load_recipe(name)
    warmup = int(r.warmup_epochs * steps_per_epoch)
    total = int(r.num_train_epochs * steps_per_epoch)
    if total > 30_000:  # the same shape, shorter: keep the test fast
        warmup, total = warmup * 30_000 // total, 30_000
    base, final = r.learning_rate, r.lr_scheduler_kwargs["min_lr"]
    ours, theirs = stock_lr_table(base, final, warmup, total), authors_lr_table(base, final, warmup, total)
    gap = np.abs(ours - theirs)
    assert gap[warmup:].max() <= 1e-12 * base
    assert gap[:warmup].max() == pytest.approx(base / warmup, rel=1e-6)  # at step W - 1
    assert int(gap.argmax()) == warmup - 1


def tiny_model(layers=2):
    config = load_preset("illama-tiny-224", **{**TINY_MODEL_OVERRIDES, "num_hidden_layers": layers}, num_labels=3)
    return ILlamaForImageClassification(config)


def test_weight_decay_groups_exclude_1d_params_position_embeddings_and_cls_token():
    model = tiny_model()
    assert model.no_weight_decay() == {"illama.embeddings.position_embeddings", "illama.embeddings.cls_token"}
    groups = optimizer_param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    expected_plain = {
        n
        for n, p in model.named_parameters()
        if p.ndim == 1 or n.endswith("position_embeddings") or n.endswith("cls_token")
    }
    assert plain == expected_plain
    assert "classifier.bias" in plain and "illama.norm.weight" in plain
    assert "classifier.weight" in decayed and "illama.layers.0.self_attn.qkv_proj.weight" in decayed
    assert len(decayed) + len(plain) == len(list(model.parameters()))


def test_layer_decay_scales_each_depth_like_beit_and_timm_sees_the_layers(caplog):
    """lr scale layer_decay ** (L + 1 - depth): embeddings depth 0, layer i depth i + 1 (the final norm joins the
    last layer, as in timm's ViT), the classifier on top with scale 1."""
    import timm.optim

    model = tiny_model(layers=3)
    decay, lr = 0.5, 1e-3
    groups = optimizer_param_groups(model, 0.05, layer_decay=decay, lr=lr)
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr"] / lr for g in groups for p in g["params"]}

    def depth(name):
        if name.startswith("illama.embeddings"):
            return 0
        if name.startswith("illama.layers."):
            return int(name.split(".")[2]) + 1
        return 3 if name.startswith("illama.norm") else 4

    assert scale == pytest.approx({n: decay ** (4 - depth(n)) for n, _ in model.named_parameters()})
    assert groups[0]["lr_scale"] == 1.0  # Trainer logs the first group's rate: the head's
    with caplog.at_level("WARNING"):
        optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=lr, weight_decay=0.05, layer_decay=decay)
    assert "one layer" not in caplog.text
    assert sorted({g["lr_scale"] for g in optimizer.param_groups}) == [decay**k for k in (4, 3, 2, 1, 0)]
