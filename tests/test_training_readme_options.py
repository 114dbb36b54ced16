"""Each option the README's training section lists, run for real on a tiny model: the value set in a recipe or as
`key=value` reaches the Trainer and does what it says (tracking, optimizer and schedule, layer decay, activation
checkpointing, torch.compile, the CLI data flags, the task / model-family dispatch). EMA, best epoch, push_to_hub
and the model card are in test_training_options.py, bf16 and streaming in test_training_trainer.py."""

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from test_training_trainer import TINY_MODEL, tiny_recipe
from tiny_data import write_tiny_image_splits

from modeling_illama.training.recipes import load_recipe
from modeling_illama.training.tasks import build_training

PLAIN = dict(mixup=0.0, cutmix=0.0, eval_strategy="no", save_strategy="no", dataloader_num_workers=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_image_splits(tmp_path_factory.mktemp("data"))  # 24 train / 8 test images, 3 classes


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Scalars of the TensorBoard event files under `folder`, decoded here from the TFRecord framing
    (uint64 length, uint32 crc, Event proto, uint32 crc)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for path in folder.rglob("events.out.tfevents.*"):
        raw = path.read_bytes()
        offset = 0
        while offset < len(raw):
            (length,) = struct.unpack("<Q", raw[offset : offset + 8])
            event = Event.FromString(raw[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_report_to_tensorboard_writes_the_logged_loss_and_rate(data, tmp_path):
    """README: `illama-train --recipe cifar10-mini ... report_to=tensorboard` (Trainer's TensorBoard integration)."""
    recipe = tiny_recipe(
        dataset=str(data), output_dir=str(tmp_path), num_train_epochs=1, report_to="tensorboard", **PLAIN
    )
    run = build_training(recipe)
    run.trainer.train()
    scalars = read_scalars(tmp_path / "runs")
    logged = {e["step"]: e for e in run.trainer.state.log_history if "loss" in e}
    assert len(logged) == 3  # 24 images / 8 per step
    for step, entry in logged.items():
        assert scalars["train/loss"][step] == pytest.approx(entry["loss"], rel=1e-6)
        assert scalars["train/soft_mask_rate"][step] == pytest.approx(entry["soft_mask_rate"])
        assert scalars["train/learning_rate"][step] == pytest.approx(entry["learning_rate"])


def test_readme_sgd_cosine_example_trains_with_torch_sgd_and_the_stock_cosine(data, tmp_path):
    """README: `illama-train --recipe cifar10-mini ... optim=sgd learning_rate=0.05 lr_scheduler_type=cosine`
    on the cifar10-mini recipe itself (its min_lr keyword belongs to cosine_with_min_lr only)."""
    overrides = ["optim=sgd", "learning_rate=0.05", "lr_scheduler_type=cosine", "num_train_epochs=2"]
    overrides += [f"model_overrides.{k}={v}" for k, v in TINY_MODEL.items()]
    overrides += ["global_batch_size=8", "per_device_train_batch_size=8", "eval_strategy=no", "save_strategy=no"]
    recipe = load_recipe("cifar10-mini", overrides + [f"dataset={data}"], output_dir=str(tmp_path))
    assert not recipe.lr_scheduler_kwargs  # the recipe's min_lr belongs to its own schedule
    assert load_recipe("cifar10-mini", ["lr_scheduler_type=cosine_with_min_lr"]).lr_scheduler_kwargs == {
        "min_lr": 1e-5
    }
    kept = load_recipe("cifar10-mini", ["lr_scheduler_type=cosine_with_min_lr", "lr_scheduler_kwargs={min_lr: 0.0}"])
    assert kept.lr_scheduler_kwargs == {"min_lr": 0.0}
    run = build_training(recipe)
    run.trainer.train()
    assert isinstance(getattr(run.trainer.optimizer, "optimizer", run.trainer.optimizer), torch.optim.SGD)
    total, warmup = 6, 3  # 3 steps per epoch, warmup_epochs 1
    assert run.trainer.args.warmup_steps == warmup
    for entry in (e for e in run.trainer.state.log_history if "loss" in e):
        s = entry["step"] - 1  # the rate logged after step s + 1 is the one used for step s + 1, i.e. index s
        expected = (
            0.05 * s / warmup if s < warmup else 0.05 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        )
        assert entry["learning_rate"] == pytest.approx(expected, abs=1e-9), entry


def test_layer_decay_reaches_the_trainer_optimizer_and_the_schedule_keeps_the_ratios(data, tmp_path):
    """README: `layer_decay=0.75`: the Trainer's optimizer holds one group per depth with lr * decay ** (L + 1 - d)
    (BEiT / timm), and the schedule scales every group alike."""
    decay, lr, layers = 0.5, 1e-3, TINY_MODEL["num_hidden_layers"]
    recipe = tiny_recipe(dataset=str(data), output_dir=str(tmp_path), layer_decay=decay, **PLAIN)
    run = build_training(recipe)
    run.trainer.train()
    optimizer = getattr(run.trainer.optimizer, "optimizer", run.trainer.optimizer)
    model = run.trainer.model
    names = {id(p): n for n, p in model.named_parameters()}
    scale_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            scale_of[names[id(p)]] = group["lr_scale"]
    assert scale_of["illama.embeddings.patch_embeddings.projection.weight"] == pytest.approx(decay ** (layers + 1))
    assert scale_of["illama.layers.0.self_attn.qkv_proj.weight"] == pytest.approx(decay**layers)
    assert scale_of[f"illama.layers.{layers - 1}.mlp.down_proj.weight"] == pytest.approx(decay)
    assert scale_of["classifier.weight"] == pytest.approx(1.0)
    current = run.trainer.lr_scheduler.get_last_lr()
    for group, last in zip(optimizer.param_groups, current):
        assert last == pytest.approx(current[0] * group["lr_scale"], rel=1e-6)  # the head's group comes first
    assert optimizer.param_groups[0]["lr_scale"] == 1.0 and lr * 1 >= current[0]


def test_activation_checkpointing_recomputes_every_layer_in_the_backward(data, tmp_path):
    """README: `activation_checkpointing=true` (TrainingArguments): each layer runs twice per training step."""
    calls = {}
    for checkpointing in (False, True):
        recipe = tiny_recipe(
            dataset=str(data),
            output_dir=str(tmp_path / str(checkpointing)),
            num_train_epochs=1,
            activation_checkpointing=checkpointing,
            **PLAIN,
        )
        run = build_training(recipe)
        count = []
        # a pre-hook: torch's non-reentrant recompute stops right after the last tensor the backward needs
        run.trainer.model.illama.layers[0].mlp.register_forward_pre_hook(lambda *a, count=count: count.append(1))
        run.trainer.train()
        calls[checkpointing] = (len(count), run.trainer.state.log_history[-2]["loss"])
    assert calls[False][0] == 6 and calls[True][0] == 12  # 3 steps x 2 micro-batches; recomputed in each backward
    assert calls[True][1] == pytest.approx(calls[False][1], rel=1e-5)  # same training


def test_torch_compile_option_compiles_the_trained_model_with_the_same_losses(data, tmp_path):
    """README: `torch_compile` (TrainingArguments): accelerate compiles the model Trainer trains; the losses equal
    the eager run's (the `eager` dynamo backend keeps the test fast; inductor is a backend choice)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    losses = {}
    for compiled in (False, True):
        extra = dict(torch_compile=True, torch_compile_backend="eager") if compiled else {}
        recipe = tiny_recipe(
            dataset=str(data), output_dir=str(tmp_path / str(compiled)), num_train_epochs=1, **PLAIN, **extra
        )
        run = build_training(recipe)
        torch._dynamo.reset()
        counters.clear()
        run.trainer.train()
        losses[compiled] = [e["loss"] for e in run.trainer.state.log_history if "loss" in e]
        if compiled:
            assert counters["frames"]["ok"] > 0  # dynamo captured the model's forward
            assert hasattr(run.trainer.model_wrapped, "_orig_mod")
    torch._dynamo.reset()
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_cli_data_flags_eval_dataset_columns_and_no_plot(tmp_path):
    """README: `--eval-dataset`, `--image-column` / `--label-column`, `--no-plot`: evaluation reads the other data
    set, the named columns are used, no curves are written."""
    import logging

    import datasets

    from modeling_illama.cli import train as cli
    from modeling_illama.training import tasks as training

    (tmp_path / "main").mkdir()
    (tmp_path / "other").mkdir()
    for folder, n_test in (("main", 8), ("other", 5)):
        write_tiny_image_splits(tmp_path / folder, n_test=n_test)
        for split in (
            "train",
            "test",
        ):  # rename the columns: auto-detection would still find them, the flags name them
            path = tmp_path / folder / f"{split}.parquet"
            table = datasets.load_dataset("parquet", data_files=str(path), split="train")
            table = table.rename_columns({"image": "photo", "label": "kind"}).add_column("decoy", [0] * len(table))
            table.to_parquet(str(path))
    recipe = tmp_path / "recipe.yaml"
    fields = tiny_recipe().recipe_dict()
    fields.update(eval_strategy="epoch", save_strategy="no", num_train_epochs=1, mixup=0.0, cutmix=0.0)
    recipe.write_text(json.dumps({k: v for k, v in fields.items() if k != "dataset"}))
    out = tmp_path / "out"
    argv = ["--recipe", str(recipe), "--dataset", str(tmp_path / "main"), "--eval-dataset", str(tmp_path / "other")]
    argv += ["--image-column", "photo", "--label-column", "kind", "--output-dir", str(out), "--no-plot"]
    built = []
    with pytest.MonkeyPatch.context() as patch:
        builder = training.TASK_BUILDERS[("image-classification", "illama")]
        patch.setitem(
            training.TASK_BUILDERS, ("image-classification", "illama"), lambda r: built.append(builder(r)) or built[-1]
        )
        try:
            assert cli.main(argv) == 0
        finally:
            for name in ("modeling_illama", "modeling_illama.training.steps"):
                logging.getLogger(name).handlers.clear()
    (run,) = built
    assert len(run.eval_data.dataset) == 5 and len(run.train_data.dataset) == 24  # the other data set's 5 test images
    record = json.loads((out / "recipe.json").read_text())
    assert (record["image_column"], record["label_column"]) == ("photo", "kind")
    assert record["eval_dataset"] == str(tmp_path / "other")
    assert not (out / "training_curves.png").exists() and (out / "model.safetensors").is_file()


def test_task_and_model_family_choose_the_builder():
    """README: `task` / `model_family` pick `TASK_BUILDERS[(task, model_family)]`; an unknown pair is named."""
    from modeling_illama.training import tasks as training

    recipe = tiny_recipe(task="image-classification", model_family="illama")
    assert training.TASK_BUILDERS[(recipe.task, recipe.model_family)] is training.build_image_classification
    seen = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(training.TASK_BUILDERS, ("depth-estimation", "illama"), seen.append)
        build_training(tiny_recipe(task="depth-estimation"))
    assert [r.task for r in seen] == ["depth-estimation"]
    with pytest.raises(ValueError, match=r"no trainer for task 'segmentation' with model family 'vit'; known: "):
        build_training(tiny_recipe(task="segmentation", model_family="vit"))
