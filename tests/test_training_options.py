"""`illama-train` end to end on a tiny model with the Transformers-user options: EMA (evaluated and saved),
best-epoch tracking, push_to_hub through Trainer's own arguments (upload redirected to a local folder), the model
card, one console line per log step; plus the evaluation transform, the head log and the FSDP config."""

import concurrent.futures
import contextlib
import io
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from test_training_trainer import TINY_MODEL
from tiny_data import write_tiny_image_splits

REPO = Path(__file__).resolve().parents[1]
EMA_DECAY = 0.5  # far from 1 so that the EMA visibly differs from the last weights


class LocalHub:
    """Stands in for huggingface_hub's HfApi: create_repo records the id, upload_folder copies the folder."""

    def __init__(self, root: Path):
        self.root = root
        self.uploads = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, ignore_patterns=(), run_as_future=False, **kwargs):
        target = self.root / repo_id
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder_path, target, ignore=shutil.ignore_patterns(*(ignore_patterns or ())))
        self.uploads.append(kwargs.get("commit_message"))
        if run_as_future:
            done = concurrent.futures.Future()
            done.set_result(None)
            return done
        return SimpleNamespace(commit_url=str(target))


class WeightRecorder:
    """Model weights after every optimizer step (to re-derive the EMA here)."""

    def __init__(self):
        self.history = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.history.append({k: v.detach().clone() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    import transformers.trainer
    from transformers import TrainerCallback

    from modeling_illama.cli import train as cli
    from modeling_illama.training import tasks as training

    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "data").mkdir()
    data = write_tiny_image_splits(tmp / "data")
    recipe = {
        "model": "illama-tiny-224",
        "model_overrides": TINY_MODEL,
        "dataset": str(data),
        "eval_split": "test",
        "crop_scale": [0.5, 1.0],
        "rand_augment": None,
        "random_erasing": 0.0,
        "eval_crop_pct": 1.0,
        "mixup": 0.0,
        "cutmix": 0.0,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "warmup_epochs": 1,
        "soft_mask": "linear",
        "soft_mask_cutoff_epochs": 1,
        "logging_steps": 1,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": "top1",
        "model_ema": True,
        "model_ema_decay": EMA_DECAY,
        "model_ema_eval": True,
        "model_ema_save": True,
        "seed": 0,
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    hub = LocalHub(tmp / "hub")
    recorder = WeightRecorder()
    built = {}
    original_build = training.build_image_classification

    def build_and_record(r):
        run = original_build(r)
        run.trainer.add_callback(type("Recorder", (TrainerCallback,), {"on_step_end": recorder.on_step_end})())
        built["run"] = run
        return run

    patch = pytest.MonkeyPatch()
    patch.setattr(transformers.trainer, "hf_api", lambda: hub)
    patch.setitem(training.TASK_BUILDERS, ("image-classification", "illama"), build_and_record)
    out = tmp / "out"
    argv = ["--recipe", str(path), "--output-dir", str(out), "push_to_hub=true", "hub_model_id=me/illama-tiny-test"]
    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            code = cli.main(argv)
        yield SimpleNamespace(
            code=code, out=out, hub=hub, recorder=recorder, run=built["run"], data=data, console=console.getvalue()
        )
    finally:
        patch.undo()
        for name in ("modeling_illama", "modeling_illama.training.steps"):
            logging.getLogger(name).handlers.clear()


def test_ema_is_the_average_of_the_step_weights_and_is_saved_as_the_model(cli_run):
    """The saved model is the EMA (decay 0.5) of the weights after each optimizer step, up to the best epoch's
    checkpoint (load_best_model_at_end restores that checkpoint's EMA)."""
    assert cli_run.code == 0
    history = cli_run.recorder.history
    assert len(history) == 2 * 3  # 24 images / 8 per step = 3 steps per epoch, 2 epochs
    best_step = int(
        json.loads((cli_run.out / "trainer_state.json").read_text())["best_model_checkpoint"].split("-")[-1]
    )
    ema = {k: v.clone() for k, v in history[0].items()}  # timm: decay 0 at the first step (a copy)
    for weights in history[1:best_step]:
        for k in ema:
            if ema[k].is_floating_point():
                ema[k] = EMA_DECAY * ema[k] + (1 - EMA_DECAY) * weights[k]
    saved = load_file(str(cli_run.out / "model.safetensors"))
    name = "illama.layers.0.self_attn.qkv_proj.weight"
    assert torch.allclose(saved[name], ema[name], atol=1e-6)
    assert not torch.allclose(saved[name], history[best_step - 1][name], atol=1e-4)  # not the raw weights
    for k, value in saved.items():
        assert torch.allclose(value, ema[k], atol=1e-6), k
    checkpoint = cli_run.out / "checkpoint-6" / "model_ema.safetensors"
    assert checkpoint.is_file()  # resumable


def test_final_metrics_are_the_saved_model_through_the_saved_processor(cli_run):
    """model_ema_eval: the evaluation ran the EMA weights = the saved model, preprocessed by the saved processor."""
    from datasets import load_dataset
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    results = json.loads((cli_run.out / "all_results.json").read_text())
    model = AutoModelForImageClassification.from_pretrained(str(cli_run.out), trust_remote_code=False).eval()
    processor = AutoImageProcessor.from_pretrained(str(cli_run.out), trust_remote_code=False)
    test = load_dataset("parquet", data_files={"test": str(cli_run.data / "test.parquet")}, split="test")
    pixels = processor([example["image"] for example in test], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    labels = torch.tensor(test["label"])
    assert results["eval_top1"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    assert results["eval_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-4)


def test_best_epoch_is_tracked_by_the_metric(cli_run):
    state = json.loads((cli_run.out / "trainer_state.json").read_text())
    epochs = [e["eval_top1"] for e in state["log_history"] if "eval_top1" in e][:2]
    assert state["best_metric"] == pytest.approx(max(epochs))
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{3 * (1 + int(np.argmax(epochs)))}")


def test_model_card_has_hub_metadata_recipe_results_and_curves(cli_run):
    card = ModelCard.load(cli_run.out / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0" and "base_model" not in meta  # trained from a preset
    results = json.loads((cli_run.out / "all_results.json").read_text())
    (entry,) = [r for r in meta["model-index"][0]["results"] if r["metrics"][0]["name"] == "Top-1 accuracy"]
    assert entry["metrics"][0]["value"] == pytest.approx(round(100 * results["eval_top1"], 2))
    assert entry["dataset"]["split"] == "test"
    assert "model_ema_decay: 0.5" in card.text and "![training curves](training_curves.png)" in card.text
    assert (cli_run.out / "training_curves.png").is_file()


def test_push_to_hub_uploads_a_loadable_folder_through_trainer_arguments(cli_run):
    from transformers import pipeline

    pushed = cli_run.hub.root / "me" / "illama-tiny-test"
    assert "illama-train: end of training" in cli_run.hub.uploads
    assert (pushed / "README.md").read_text() == (cli_run.out / "README.md").read_text()
    assert not list(pushed.glob("checkpoint-*"))
    classifier = pipeline("image-classification", model=str(pushed), trust_remote_code=False)
    predictions = classifier(Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)), top_k=3)
    assert sorted(p["label"] for p in predictions) == ["a", "b", "c"]


def test_one_console_line_per_log_step_and_the_json_copy_only_in_the_file(cli_run):
    state = json.loads((cli_run.out / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "loss" in e]
    assert len(steps) == 6
    console = cli_run.console
    assert console.count("{'loss': ") == len(steps)  # Trainer's own line, once per logging step
    assert "modeling_illama.training.steps" not in console  # the JSON copy is not on the console ...
    log = (cli_run.out / "train.log").read_text()
    json_lines = [line for line in log.splitlines() if "modeling_illama.training.steps" in line]
    assert len(json_lines) >= len(steps)  # ... but in train.log, with evaluations and the summary
    assert "Requested torchvision backend" not in console + log
    assert "custom code" not in console + log  # no remote-code prompt: the installed package is used
    assert "classification head" not in log  # trained from a preset: no head to keep or replace


def test_card_for_a_fine_tuned_hub_model_names_base_model_and_data_set():
    from modeling_illama.training.model_card import render_training_card

    text = render_training_card(
        "illama-cifar10",
        {"learning_rate": 5e-4},
        {"eval_top1": 0.9712, "eval_top5": 0.999},
        [{"epoch": 1.0, "step": 10, "eval_loss": 0.2, "eval_top1": 0.9712, "eval_top5": 0.999}],
        model="someone/illama-tiny-in1k",
        dataset="uoft-cs/cifar10",
        eval_split="test",
        from_scratch=False,
    )
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["base_model"] == "someone/illama-tiny-in1k" and meta["datasets"] == ["uoft-cs/cifar10"]
    metric = meta["model-index"][0]["results"][0]
    assert metric["dataset"]["type"] == "uoft-cs/cifar10" and metric["metrics"][0]["value"] == 97.12
    assert "| 1.00 | 10 | 0.2000 | 97.12 | 99.90 |" in text


@pytest.mark.parametrize("size, crop_pct", [(224, 0.875), (384, 1.0)])
def test_training_evaluation_uses_exactly_the_saved_processor(tmp_path, size, crop_pct):
    """Evaluation during training, the saved folder (Auto / illama-eval) and pipelines preprocess identically."""
    from transformers import AutoImageProcessor

    from modeling_illama.training.models import build_image_processor
    from modeling_illama.training.recipes import recipe_from_dict
    from modeling_illama.training.transforms import processor_transform

    recipe = recipe_from_dict({"eval_crop_pct": crop_pct})
    processor = build_image_processor(recipe, size)
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(str(tmp_path))
    rng = np.random.default_rng(size)
    image = Image.fromarray(rng.integers(0, 255, (300, 451, 3), dtype=np.uint8))  # not square
    during_training = processor_transform(processor)(image)
    assert during_training.shape == (3, size, size)
    assert torch.equal(during_training, loaded(image, return_tensors="pt")["pixel_values"][0])


def test_head_log_says_kept_or_new(tmp_path, caplog):
    from modeling_illama import ILlamaForImageClassification, load_preset
    from modeling_illama.training.models import build_model
    from modeling_illama.training.recipes import recipe_from_dict

    config = load_preset("illama-tiny-224", **TINY_MODEL, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    saved = ILlamaForImageClassification(config)
    saved.save_pretrained(tmp_path)
    recipe = recipe_from_dict({})
    with caplog.at_level(logging.INFO, logger="modeling_illama"):
        renamed = build_model(str(tmp_path), recipe, ["x", "y", "z"])
    assert "classification head: KEPT (same class count 3); label names replaced" in caplog.text
    assert torch.equal(renamed.classifier.weight, saved.classifier.weight)
    assert renamed.config.id2label == {0: "x", 1: "y", 2: "z"}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modeling_illama"):
        build_model(str(tmp_path), recipe, ["x", "y"])
    assert "classification head: NEW, randomly initialised" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modeling_illama"):
        build_model(str(tmp_path), recipe, ["a", "b", "c"])
    assert "classification head: KEPT (same 3 labels" in caplog.text


def test_fsdp_config_saves_full_weights():
    """What a CPU can check: the shipped config asks for FULL_STATE_DICT, the state-dict type for which
    Trainer.save_model gathers and writes the full weights (with SHARDED_STATE_DICT it writes none)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import FullyShardedDataParallelPlugin

    path = REPO / "configuration" / "accelerate" / "multi-gpu-fsdp.yaml"
    config = load_config_from_file(str(path))
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        state_dict_type=config.fsdp_config["fsdp_state_dict_type"],
        reshard_after_forward=True,
    )
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
