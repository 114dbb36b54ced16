"""A real Trainer run on a tiny model: the soft-mask callback under gradient accumulation, the mixup loss,
the learning-rate schedule, evaluation at r = 0, checkpoints and the saved Hub-ready folder."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_data import TINY_MODEL_OVERRIDES, tiny_recipe_fields, write_tiny_image_splits

from modeling_illama.training.assembly import save_final_model
from modeling_illama.training.recipes import recipe_from_dict
from modeling_illama.training.tasks import build_training

TINY_MODEL = {**TINY_MODEL_OVERRIDES, "num_hidden_layers": 2}


def tiny_recipe(**changes):
    fields = {"mixup": 0.8, "cutmix": 1.0, "seed": 0, **changes}
    return recipe_from_dict(tiny_recipe_fields(TINY_MODEL, **fields))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    data = write_tiny_image_splits(tmp_path_factory.mktemp("data"), broken=(5,))
    out = tmp_path_factory.mktemp("run")
    run = build_training(tiny_recipe(dataset=str(data), output_dir=str(out)))
    model = run.trainer.model
    seen = []  # (global step, training?, r) at every forward
    model.register_forward_pre_hook(
        lambda module, args: seen.append((run.trainer.state.global_step, module.training, module.soft_mask_rate))
    )
    run.trainer.train()
    save_final_model(run, out)
    return run, seen, out


def test_steps_per_epoch_and_accumulation(finished_run):
    run, _, _ = finished_run
    # 24 images, 4 per micro-batch -> 6 micro-batches, accumulation 2 -> 3 optimizer steps per epoch
    assert run.trainer.args.gradient_accumulation_steps == 2
    assert run.steps_per_epoch == 3 and run.trainer.state.global_step == 6


def test_every_micro_batch_of_a_step_sees_the_scheduled_rate(finished_run):
    _, seen, _ = finished_run
    train = [(step, r) for step, training, r in seen if training]
    assert len(train) == 12  # 6 optimizer steps x 2 micro-batches
    # linear over cutoff = 1 epoch = 3 steps: linspace(1, 0, 3) = 1, .5, 0 then 0
    expected = {0: 1.0, 1: 0.5, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}
    for step, r in train:
        assert r == pytest.approx(expected[step])
    assert sorted({step for step, _ in train}) == list(range(6))


def test_evaluation_runs_the_deployed_model(finished_run):
    _, seen, _ = finished_run
    evals = [(step, r) for step, training, r in seen if not training]
    assert evals and all(r == 0.0 for _, r in evals)
    assert any(step == 3 for step, _ in evals)  # the end-of-epoch-1 evaluation happened while r was scheduled


def test_log_history_has_loss_rate_and_learning_rate_per_step(finished_run):
    run, _, _ = finished_run
    logs = [e for e in run.trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in logs] == [1, 2, 3, 4, 5, 6]
    assert [e["soft_mask_rate"] for e in logs] == pytest.approx([1.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    # warmup 1 epoch = 3 steps: lr * s / 3 (Transformers' linear warm-up); then cosine over the 3 remaining
    # steps to 1e-5 (cosine_with_min_lr)
    cosine = [1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * i / 3)) for i in range(3)]
    assert [e["learning_rate"] for e in logs] == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3] + cosine)
    assert all(math.isfinite(e["loss"]) for e in logs)
    assert logs[-1]["undecodable_images"] == 2  # the broken image, once per epoch
    evals = [e for e in run.trainer.state.log_history if "eval_top1" in e]
    assert len(evals) == 2 and all(0.0 <= e["eval_top1"] <= e["eval_top5"] <= 1.0 for e in evals)


def test_checkpoint_stores_the_schedule_and_the_saved_model_is_causal(finished_run):
    run, _, out = finished_run
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    stored = state["stateful_callbacks"]["SoftMaskCallback"]
    assert stored["args"] == {"schedule": "linear", "cutoff_steps": 3}
    assert stored["attributes"]["step"] == 5 and stored["attributes"]["rate"] == 0.0
    config = json.loads((out / "config.json").read_text())
    assert config["soft_mask_rate"] == 0.0 and config["id2label"] == {"0": "a", "1": "b", "2": "c"}
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    assert run.trainer.model.config.soft_mask_rate == 0.0


def test_saved_folder_classifies_with_pipeline(finished_run):
    from transformers import pipeline

    _, _, out = finished_run
    classifier = pipeline("image-classification", model=str(out), trust_remote_code=False)
    image = Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8))
    predictions = classifier(image, top_k=3)
    assert sorted(p["label"] for p in predictions) == ["a", "b", "c"]
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-4)


def test_mixup_loss_is_soft_target_cross_entropy(finished_run):
    run, _, _ = finished_run
    trainer, model = run.trainer, run.trainer.model
    torch.manual_seed(0)
    pixel_values, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    model.train()
    np.random.seed(1)
    loss = trainer.compute_loss(model, {"pixel_values": pixel_values.clone(), "labels": labels})
    # the same mixup draw again, then soft-target cross-entropy written out
    np.random.seed(1)
    mixed, targets = trainer.mixup_fn(pixel_values.clone(), labels)
    assert targets.shape == (4, 3) and torch.allclose(targets.sum(1), torch.ones(4))
    # drop path is 0, so the forward is deterministic
    logits = model(pixel_values=mixed).logits
    expected = (-targets * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    model.eval()


def test_streaming_training_uses_steps_for_the_schedules(tmp_path):
    (tmp_path / "data").mkdir()
    data = write_tiny_image_splits(tmp_path / "data")
    recipe = tiny_recipe(
        eval_split=None,
        max_steps=4,
        soft_mask="constant",
        soft_mask_cutoff_steps=2,
        warmup_steps=1,
        warmup_epochs=None,
        save_strategy="no",
        mixup=0.0,
        cutmix=0.0,
        shuffle_buffer=8,
        dataset=str(data),
        output_dir=str(tmp_path / "out"),
        streaming=True,
    )
    run = build_training(recipe)
    assert run.steps_per_epoch is None  # unknown length: schedules are given in steps
    run.trainer.train()
    logs = [e for e in run.trainer.state.log_history if "loss" in e]
    assert [e["soft_mask_rate"] for e in logs] == [1.0, 1.0, 0.0, 0.0]
    # one warm-up step: 0 at step 0, the peak from step 1 (Transformers' linear warm-up lr * s / W)
    assert logs[0]["learning_rate"] == 0.0 and logs[1]["learning_rate"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="streaming data has no length"):
        build_training(
            tiny_recipe(eval_split=None, dataset=str(data), output_dir=str(tmp_path / "o2"), streaming=True)
        )


def test_fine_tuning_a_folder_replaces_the_head_and_resizes_positions(tmp_path):
    from modeling_illama import ILlamaForImageClassification, load_preset
    from modeling_illama.training.models import build_model

    config = load_preset(
        "illama-tiny-224",
        **TINY_MODEL,
        num_labels=3,
        id2label={0: "a", 1: "b", 2: "c"},
        label2id={"a": 0, "b": 1, "c": 2},
    )
    ILlamaForImageClassification(config).save_pretrained(tmp_path / "pretrained")
    saved = ILlamaForImageClassification.from_pretrained(tmp_path / "pretrained")

    same = build_model(str(tmp_path / "pretrained"), tiny_recipe(), ["a", "b", "c"])
    assert torch.equal(same.classifier.weight, saved.classifier.weight)  # same labels: head kept

    tuned = build_model(str(tmp_path / "pretrained"), tiny_recipe(image_size=32, drop_path_rate=0.1), ["x", "y"])
    assert tuned.config.id2label == {0: "x", 1: "y"} and tuned.classifier.weight.shape == (2, 32)
    assert tuned.config.image_size == 32 and tuned.config.drop_path_rate == 0.1
    assert tuned.illama.embeddings.position_embeddings.shape == (1, 4 * 4 + 1, 32)
    old = saved.illama.embeddings.position_embeddings
    assert torch.equal(tuned.illama.embeddings.position_embeddings[:, -1], old[:, -1])  # cls row kept aside
    name = "illama.layers.0.self_attn.qkv_proj.weight"
    assert torch.equal(tuned.state_dict()[name], saved.state_dict()[name])  # backbone kept
    logits = tuned(pixel_values=torch.randn(1, 3, 32, 32)).logits
    assert logits.shape == (1, 2)


def test_bf16_recipe_flag_trains_under_autocast_on_cpu(tmp_path):
    """`bf16=true` reaches Trainer/accelerate: the forward runs under bf16 autocast, weights stay fp32, loss finite."""
    (tmp_path / "data").mkdir()
    data = write_tiny_image_splits(tmp_path / "data", broken=(5,))
    run = build_training(
        tiny_recipe(
            bf16=True,
            num_train_epochs=1,
            eval_strategy="no",
            save_strategy="no",
            mixup=0.0,
            cutmix=0.0,
            dataset=str(data),
            output_dir=str(tmp_path / "run"),
        )
    )
    assert run.trainer.args.bf16
    dtypes = []
    run.trainer.model.classifier.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    result = run.trainer.train()
    assert dtypes and all(dtype == torch.bfloat16 for dtype in dtypes)
    assert next(run.trainer.model.parameters()).dtype == torch.float32
    assert math.isfinite(result.training_loss)


def test_illama_eval_writes_metrics_equal_to_a_plain_computation(finished_run, tmp_path, capsys):
    """illama-eval on the saved folder: its JSON matches top-1/top-5/loss computed here from the same folder."""
    from datasets import load_dataset
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from modeling_illama.cli.eval import main as eval_main

    _, _, out = finished_run
    data = write_tiny_image_splits(tmp_path, broken=(5,))  # same seed: the same test images as the training run's
    report = tmp_path / "eval.json"
    assert eval_main(["--model", str(out), "--dataset", str(data), "--split", "test", "--output", str(report)]) == 0
    result = json.loads(report.read_text())
    assert "top-1" in capsys.readouterr().out

    model = AutoModelForImageClassification.from_pretrained(str(out), trust_remote_code=False).eval()
    processor = AutoImageProcessor.from_pretrained(str(out), trust_remote_code=False)
    test = load_dataset("parquet", data_files={"test": str(data / "test.parquet")}, split="test")
    pixels = processor([example["image"] for example in test], return_tensors="pt")["pixel_values"]
    labels = torch.tensor(test["label"])
    with torch.no_grad():
        logits = model(pixels).logits
    ranked = logits.argsort(dim=-1, descending=True)
    assert result["num_images"] == len(test) == 8
    assert result["top1"] == pytest.approx((ranked[:, 0] == labels).float().mean().item())
    assert result["top5"] == pytest.approx((ranked[:, :5] == labels[:, None]).any(-1).float().mean().item())
    assert result["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-4)
    assert 0.0 <= result["ece"] <= 1.0 and result["images_per_second"] > 0


def test_building_a_run_leaves_the_recipe_as_given(tmp_path):
    """The builder trains with a copy of the recipe: gradient accumulation (global batch 8 = 4 per device x 2),
    the warm-up in steps (1 epoch = 3 optimizer steps) and `eval_strategy: no` (no evaluation split) are set on
    `run.trainer.args`, never on the recipe the caller holds."""
    data = write_tiny_image_splits(tmp_path / "data")
    recipe = tiny_recipe(dataset=str(data), output_dir=str(tmp_path / "out"), eval_split=None, save_strategy="no")
    given = recipe.to_dict()
    run = build_training(recipe)
    assert recipe.to_dict() == given
    assert (recipe.gradient_accumulation_steps, recipe.warmup_steps, recipe.eval_strategy) == (1, 0, "epoch")
    args = run.trainer.args
    assert args is not recipe and run.steps_per_epoch == 3
    assert (args.gradient_accumulation_steps, args.warmup_steps, args.eval_strategy) == (2, 3, "no")
