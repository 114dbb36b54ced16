"""The experiment-only pieces of experiments/ablation (the training grid itself is never run by tests)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_illama import ILlamaConfig, ILlamaForImageClassification

ABLATION_DIR = Path(__file__).resolve().parents[1] / "experiments" / "ablation"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"ablation_{name}", ABLATION_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # transformers reads a model class's module source from sys.modules
    spec.loader.exec_module(module)
    return module


def _tiny_config(**kwargs) -> ILlamaConfig:
    return ILlamaConfig(
        image_size=8, patch_size=4, hidden_size=16, num_attention_heads=2, num_hidden_layers=2, num_labels=3, **kwargs
    )


def _class_first_model(seed: int = 0, **config):
    cls = _load("class_first").ILlamaClassFirstForImageClassification
    torch.manual_seed(seed)
    return cls(_tiny_config(**config)).eval()


def test_class_first_causal_row_zero_sees_only_itself():
    images = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for style in ("post_softmax", "renormalized"):
        model = _class_first_model(mask_style=style)
        model.set_attn_implementation("eager")
        with torch.no_grad():
            out = model(pixel_values=images, output_attentions=True)
        for attention in out.attentions:  # (batch, heads, N, N), row 0 is the class token's
            assert torch.count_nonzero(attention[:, :, 0, 1:]) == 0
            assert torch.all(attention[:, :, 0, 0] > 0)
        if style == "renormalized":
            # softmax over its own key only: weight 1, the class token never sees a patch and every image gets
            # the same logits (the collapse)
            for attention in out.attentions:
                torch.testing.assert_close(attention[:, :, 0, 0], torch.ones(3, 2))
            torch.testing.assert_close(out.logits[0], out.logits[1])
            torch.testing.assert_close(out.logits[0], out.logits[2])
        else:
            # the authors' post-softmax arithmetic masks AFTER a softmax over every key: the class token keeps
            # its own value, scaled by a weight that the patch keys set (the leak the ablation discusses)
            assert torch.all(out.attentions[0][:, :, 0, 0] < 1)
            assert (out.logits[0] - out.logits[1]).abs().max() > 0
        model.set_soft_mask_rate(1.0)  # bidirectional: token 0 sees the patches
        with torch.no_grad():
            logits = model(pixel_values=images).logits
        assert (logits[0] - logits[1]).abs().max() > 1e-4


def test_class_first_pools_token_zero_and_differs_from_ps_cls():
    model = _class_first_model()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    model.set_soft_mask_rate(1.0)
    with torch.no_grad():
        logits = model(pixel_values=images).logits
        hidden = model.illama(images, pooled_only=False).last_hidden_state
    # the class token is the first row of the sequence: cls + position row 0 before the first block
    embedded = model.illama.embeddings(images)
    torch.testing.assert_close(
        embedded[:, 0],
        (model.illama.embeddings.cls_token + model.illama.embeddings.position_embeddings[:, 0])[0].expand(2, -1),
    )
    torch.testing.assert_close(logits, model.classifier(hidden[:, 0]))

    released = ILlamaForImageClassification(_tiny_config()).eval()
    released.load_state_dict(model.state_dict())
    released.set_soft_mask_rate(1.0)
    with torch.no_grad():
        released_logits = released(pixel_values=images).logits
    assert (released_logits - logits).abs().max() > 1e-4


def test_class_first_round_trip_keeps_the_variant(tmp_path):
    module = _load("class_first")
    model = _class_first_model()
    model.save_pretrained(tmp_path)
    loaded = module.ILlamaClassFirstForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.illama.embeddings, module.ILlamaClassFirstEmbeddings)
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=images).logits, model(pixel_values=images).logits)


def test_effective_rank_matches_numpy_svd():
    effective_rank = _load("attention_rank").effective_rank
    rng = np.random.default_rng(0)
    matrices = rng.random((4, 9, 9))
    matrices /= matrices.sum(-1, keepdims=True)
    matrices[1] = np.tril(matrices[1])
    matrices[2] = np.eye(9)
    matrices[3] = np.full((9, 9), 1 / 9)
    expected = []
    for matrix in matrices:
        singular = np.linalg.svd(matrix, compute_uv=False)
        cumulative = np.cumsum(singular) / singular.sum()
        expected.append(int(np.argmax(cumulative >= 0.8 - 1e-12)) + 1)
    assert expected[2] == 8 and expected[3] == 1  # identity: 8 of 9 values for 80%; uniform rows: rank one
    assert effective_rank(torch.from_numpy(matrices)).tolist() == expected


def test_every_arm_trains_and_is_evaluated_at_its_intended_rates():
    """Each arm's overrides, read by the package's recipe parser, give the schedule the arm names: r over every
    optimizer step of the run (from the package's own schedule function) and the rate the arm is evaluated at."""
    from modeling_illama.training.recipes import load_recipe
    from modeling_illama.training.soft_mask import cutoff_in_steps, soft_mask_rate

    run = _load("run")
    args = run.parse_args([])
    steps_per_epoch = 80  # 5,085 training images / batch 64, rounded up
    total = int(args.epochs * steps_per_epoch)
    seen = {}
    for arm in run.ARMS:
        name, _, class_first, eval_rate, _ = arm
        recipe = load_recipe(args.recipe, ["seed=0", *run.arm_overrides(args, arm)], output_dir="unused")
        assert recipe.model_overrides["num_hidden_layers"] == args.layers
        assert recipe.model_overrides["hidden_size"] == args.hidden_size
        assert recipe.num_train_epochs == args.epochs and recipe.eval_split is None
        cutoff = cutoff_in_steps(recipe.soft_mask_cutoff_epochs, steps_per_epoch)
        rates = [soft_mask_rate(step, recipe.soft_mask, cutoff) for step in range(total)]
        style = recipe.model_overrides.get("mask_style", "post_softmax")
        seen[name] = (class_first, style, recipe.soft_mask, rates[0], rates[-1], eval_rate)
        assert run.run_command(args, arm, 0, Path("d")).count("--class-first") == int(class_first)
    a, b, c, d, c_long, d_long, e, f = (seen[arm[0]] for arm in run.ARMS)
    assert a == (True, "post_softmax", "none", 0.0, 0.0, 0.0)  # class token first, causal throughout
    assert b == (False, "post_softmax", "none", 0.0, 0.0, 0.0)  # PS [cls], causal throughout
    assert c == (False, "post_softmax", "linear", 1.0, 0.0, 0.0)
    assert d == (False, "post_softmax", "constant", 1.0, 0.0, 0.0)
    assert e == (False, "post_softmax", "constant", 1.0, 1.0, 1.0)  # bidirectional at every step and at test
    assert f == (False, "renormalized", "linear", 1.0, 0.0, 0.0)
    assert c_long == c and d_long == d
    long_cutoff = cutoff_in_steps(args.long_soft_mask_cutoff_epochs, steps_per_epoch)
    warmup = cutoff_in_steps(args.warmup_epochs, steps_per_epoch)
    assert warmup < long_cutoff < total  # the long soft mask lasts past the warm-up, not the whole run
    long_recipe = load_recipe(args.recipe, run.arm_overrides(args, run.ARMS[5]), output_dir="unused")
    assert cutoff_in_steps(long_recipe.soft_mask_cutoff_epochs, steps_per_epoch) == long_cutoff
    assert soft_mask_rate(long_cutoff - 1, "constant", long_cutoff) == 1.0
    # the two soft-mask schedules share the cutoff; the linear one falls evenly, the constant one stays at 1
    cutoff = cutoff_in_steps(args.soft_mask_cutoff_epochs, steps_per_epoch)
    assert [soft_mask_rate(s, "constant", cutoff) for s in range(cutoff)] == [1.0] * cutoff
    assert soft_mask_rate(cutoff // 2, "linear", cutoff) == pytest.approx(1 - (cutoff // 2) / (cutoff - 1))


def test_class_first_leaves_the_released_model_alone():
    """Loading the experiment module changes nothing in the package: the released class still appends the
    class token LAST (position row N) and pools the last token."""
    import modeling_illama

    released_before = modeling_illama.ILlamaForImageClassification
    _load("class_first")
    assert modeling_illama.ILlamaForImageClassification is released_before
    torch.manual_seed(0)
    released = ILlamaForImageClassification(_tiny_config()).eval()
    assert type(released.illama.embeddings).__name__ == "ILlamaEmbeddings"
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    embeddings = released.illama.embeddings
    with torch.no_grad():
        embedded = embeddings(images)
        released.set_soft_mask_rate(1.0)
        hidden = released.illama(images, pooled_only=False).last_hidden_state
        logits = released(pixel_values=images).logits
    torch.testing.assert_close(
        embedded[:, -1], (embeddings.cls_token + embeddings.position_embeddings[:, -1])[0].expand(2, -1)
    )
    torch.testing.assert_close(logits, released.classifier(hidden[:, -1]), rtol=1e-5, atol=1e-5)


def _fake_run(run_dir: Path, top1: float, losses: list[float], rank: float, wall: float) -> None:
    run_dir.mkdir(parents=True)
    log = [{"step": 10 * (i + 1), "loss": loss} for i, loss in enumerate(losses)] + [{"step": 40, "train_loss": 9.0}]
    result = {
        "test": {"top1": top1},
        "log_history": log,
        "attention_rank": [{"layer": 0, "mean": rank, "head0_mean": rank, "tokens": 5}],
        "cpu_seconds": 60.0,
        "wall_seconds": wall,
        "train_args": ["--recipe", "cifar10-mini"],
    }
    (run_dir / "arm_result.json").write_text(json.dumps(result))
    (run_dir / "git_commit").write_text("abc123")


def test_summary_tables_and_plots_from_finished_runs(tmp_path):
    """Two arms x two seeds of hand-made run results -> per-arm mean/std re-derived here, files written."""
    run = _load("run")
    runs, out = tmp_path / "runs", tmp_path / "results"
    _fake_run(runs / "b_ps_cls_causal-seed0", 0.30, [2.3, 2.1, 2.0, 1.9], rank=3.0, wall=100)
    _fake_run(runs / "b_ps_cls_causal-seed1", 0.34, [2.3, 2.2, 1.8, 1.7], rank=4.0, wall=120)
    _fake_run(runs / "e_bidirectional-seed0", 0.40, [2.2, 2.0, 1.6, 1.5], rank=2.0, wall=90)
    _fake_run(runs / "e_bidirectional-seed1", 0.38, [2.2, 1.9, 1.7, 1.6], rank=2.0, wall=95)
    args = run.parse_args(
        [
            "--summarize-only",
            "--arms",
            "b_ps_cls_causal",
            "e_bidirectional",
            "--runs-dir",
            str(runs),
            "--output-dir",
            str(out),
        ]
    )
    summary = run.summarize(args, {"load_average_1min_samples": {"mean": 2.0, "min": 1.0, "max": 3.0, "count": 4}})
    b, e = summary["arms"]["b_ps_cls_causal"], summary["arms"]["e_bidirectional"]
    assert b["test_top1"]["mean"] == pytest.approx(32.0) and b["test_top1"]["std"] == pytest.approx(
        np.std([30, 34], ddof=1)
    )
    # last 25% of 40 steps: only step 40 is past step 30 -> the last logged loss; the "train_loss" summary is no loss
    assert b["final_train_loss"]["values"] == pytest.approx([1.9, 1.7])
    assert e["final_train_loss"]["mean"] == pytest.approx(1.55)
    assert b["attention_rank"][0]["mean"] == pytest.approx(3.5) and e["attention_rank"][0]["mean"] == 2.0
    assert summary["total_cpu_seconds"] == 240.0 and b["commits"] == ["abc123"]
    run.write_outputs(summary, out)
    table = (out / "ablation.md").read_text()
    assert "| (b) PS [cls], no soft mask | 2 | 32.00 ± 2.83 | 30.0, 34.0 | 1.800 ± 0.141 |" in table
    assert "mean 2.0 (min 1.0, max 3.0; 4 samples" in table
    assert json.loads((out / "ablation.json").read_text())["arms"]["e_bidirectional"]["test_top1"]["values"] == [
        40.0,
        38.0,
    ]
    for png in ("ablation_training_loss.png", "ablation_attention_rank.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the hand-written discussion after the marker survives a regeneration
    (out / "ablation.md").write_text(table + "\nwritten by hand\n")
    run.write_outputs(summary, out)
    assert (out / "ablation.md").read_text().endswith("written by hand\n")


def test_uniform_attention_rank_reference():
    """The mask-only reference ranks, re-derived with numpy on explicitly built matrices (N = 65, the ablation's)."""
    run = _load("run")
    tokens = 65
    lower = np.tril(np.ones((tokens, tokens)))

    def rank(matrix):
        singular = np.linalg.svd(matrix, compute_uv=False)
        return int(np.argmax(np.cumsum(singular) / singular.sum() >= 0.8 - 1e-12)) + 1

    expected = {
        "causal_post_softmax": rank(lower / tokens),
        "causal_renormalized": rank(lower / lower.sum(1, keepdims=True)),
        "bidirectional": rank(np.full((tokens, tokens), 1 / tokens)),
    }
    assert expected["bidirectional"] == 1 and expected["causal_post_softmax"] > expected["causal_renormalized"] > 1
    assert run.uniform_attention_rank(tokens) == expected
