"""Nothing lost, nothing silently wrong: each case an adversarial user hit (issue 15), reproduced and answered
with the safe behaviour (a refusal, a one-line error, or the right result). Tiny models, a few images."""

import copy
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_data import TINY_MODEL_OVERRIDES, tiny_recipe_fields

from modeling_illama import ILlamaForImageClassification, build_image_processor, load_preset
from modeling_illama.cli.activation_maps import main as activation_maps_main
from modeling_illama.cli.convert import main as convert_main
from modeling_illama.cli.eval import main as eval_main
from modeling_illama.cli.train import main as train_main
from modeling_illama.conversion import CheckpointError, convert_checkpoint, export_official
from modeling_illama.labels import LabelError, label_fields, label_mapping
from modeling_illama.loading import MissingWeightsError, load_classifier, load_image_processor
from modeling_illama.training.data import decode_image, load_image_dataset
from modeling_illama.training.evaluation import evaluate_saved_model
from modeling_illama.training.output_dir import (
    LOCK_FILE,
    OutputDirError,
    OutputDirInUseError,
    OutputDirLock,
    prepare_output_dir,
)
from modeling_illama.training.recipes import recipe_from_dict
from modeling_illama.training.resume import RecipeChangedError, check_resume_record, last_checkpoint
from modeling_illama.training.tasks import build_training

CLASSES = ["a", "b", "c"]


def png_bytes(rng) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_split(path, labels, names=CLASSES, seed=0):
    """A parquet split with one random 16x16 PNG per label; `names=None` stores plain integer labels.

    With `names`, the label column is declared a ClassLabel in the file's metadata as datasets writes it, but
    the ids are written as given (datasets itself refuses to write an id outside the ClassLabel).
    """
    rng = np.random.default_rng(seed)
    rows = {"image": [{"bytes": png_bytes(rng), "path": None} for _ in labels], "label": list(labels)}
    Dataset.from_dict(rows, features=Features({"image": ImageFeature(), "label": Value("int64")})).to_parquet(
        str(path)
    )
    if names:
        features = Features({"image": ImageFeature(), "label": ClassLabel(names=names)})
        table = pq.read_table(path)
        metadata = {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
        pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def write_data(root, train_labels=(0, 1, 2) * 4, test_labels=(0, 1, 2) * 2, train_names=CLASSES, test_names=CLASSES):
    root.mkdir(parents=True, exist_ok=True)
    write_split(root / "train.parquet", train_labels, train_names, seed=0)
    write_split(root / "test.parquet", test_labels, test_names, seed=1)
    return root


def tiny_recipe(**changes):
    """One epoch of plain training (no soft mask, no warm-up, linear schedule, no checkpoints); `model` given by
    the caller."""
    plain = dict(
        model=None,
        num_train_epochs=1,
        global_batch_size=4,
        lr_scheduler_type="linear",
        lr_scheduler_kwargs={},
        warmup_epochs=0,
        weight_decay=0.0,
        soft_mask="none",
        save_strategy="no",
        save_total_limit=None,
        seed=0,
    )
    return recipe_from_dict(tiny_recipe_fields(TINY_MODEL_OVERRIDES, **{**plain, **changes}))


def build_run(model, data, output_dir, **changes):
    """`build_training` of the tiny recipe for `model` (preset or folder) on `data`, writing into `output_dir`."""
    return build_training(tiny_recipe(model=str(model), dataset=str(data), output_dir=str(output_dir), **changes))


# ------------------------------------------------------------------ 1. an existing model is never written over


def test_training_output_dir_with_a_model_is_refused_and_overwrite_removes_only_run_outputs(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "trainer_state.json", "eval_test.json", "train.log"):
        (out / name).write_text("old run")
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()

    with pytest.raises(OutputDirError, match=r"already holds .*config\.json.*model\.safetensors.*--overwrite"):
        prepare_output_dir(out)
    assert (out / "model.safetensors").read_text() == "old run"  # the refusal touched nothing
    with pytest.raises(OutputDirError, match="exclude each other"):
        prepare_output_dir(out, overwrite=True, resume=True)
    assert prepare_output_dir(out, resume=True) == []

    removed = prepare_output_dir(out, overwrite=True)
    assert set(removed) == {
        "config.json",
        "model.safetensors",
        "trainer_state.json",
        "eval_test.json",  # the stale metrics do not stay next to new weights
        "train.log",
        "checkpoint-4",
    }
    assert sorted(os.listdir(out)) == ["data", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def write_recipe(path, **changes):
    path.write_text(yaml.safe_dump({**tiny_recipe(**changes).recipe_dict(), "model": "illama-tiny-224"}))
    return path


def test_illama_train_refuses_a_folder_holding_a_model(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")
    argv = ["--recipe", str(write_recipe(tmp_path / "r.yaml")), "--dataset", str(tmp_path), "--output-dir", str(out)]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("illama-train: error: ") and "already holds a training run or model" in err
    assert (out / "model.safetensors").read_bytes() == b"weights" and not (out / "train.log").exists()


# ------------------------------------------------------------------ 2. one run per output folder


def _hold_lock(folder, ready):
    OutputDirLock(folder).acquire()
    ready.set()
    time.sleep(120)  # killed by the test long before


def test_a_second_run_is_refused_naming_the_first_and_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_lock, args=(tmp_path, ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(OutputDirInUseError, match=rf"in use by another training run \(pid {holder.pid} on "):
            OutputDirLock(tmp_path).acquire()
        recipe = str(write_recipe(tmp_path / "r.yaml"))
        argv = ["--recipe", recipe, "--dataset", str(tmp_path), "--output-dir", str(tmp_path)]
        assert train_main(argv) == 2  # illama-train: the same refusal, one line, before any log is written
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"illama-train: error: {tmp_path} is in use by another training run (pid {holder.pid}")
        assert len(err.splitlines()) == 1 and not (tmp_path / "train.log").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the lock: the file stays, the kernel lock goes
        holder.join(30)
    assert (tmp_path / LOCK_FILE).exists()
    with OutputDirLock(tmp_path) as lock:
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid()
        with pytest.raises(OutputDirInUseError, match=rf"pid {os.getpid()}"):  # a second lock in this process
            OutputDirLock(tmp_path).acquire()
    assert lock._fd is None and not (tmp_path / LOCK_FILE).exists()
    OutputDirLock(tmp_path).acquire().release()  # free again


# ------------------------------------------------------------------ 3. evaluation maps class names


@pytest.mark.parametrize("eval_source", ["eval-split", "eval-dataset"])
def test_evaluation_during_training_maps_eval_class_names_onto_the_model_classes(tmp_path, eval_source):
    test_names = ["c", "a", "b"]  # the same classes in another order
    if eval_source == "eval-split":
        data = write_data(tmp_path / "data", test_names=test_names)
        run = build_run("illama-tiny-224", data, tmp_path / "out")
    else:  # --eval-dataset: the evaluation data lives elsewhere
        data = write_data(tmp_path / "data")
        elsewhere = write_data(tmp_path / "elsewhere", test_names=test_names)
        run = build_run("illama-tiny-224", data, tmp_path / "out", eval_dataset=str(elsewhere))
    assert run.eval_data.label_names == test_names
    raw = run.eval_data.dataset["label"]
    mapped = [run.trainer.eval_dataset[i]["labels"] for i in range(len(raw))]
    assert mapped == [CLASSES.index(test_names[label]) for label in raw]

    # the metric Trainer reports is top-1 against the MAPPED labels, computed here from the model's own logits
    model = run.trainer.model.eval()
    pixels = torch.stack([run.trainer.eval_dataset[i]["pixel_values"] for i in range(len(raw))])
    with torch.no_grad():
        predicted = model(pixel_values=pixels).logits.argmax(-1).tolist()
    expected = float(np.mean([p == t for p, t in zip(predicted, mapped)]))
    assert run.trainer.evaluate()["eval_top1"] == pytest.approx(expected)


def test_one_class_mapping_for_training_and_illama_eval():
    assert label_mapping(["a", "b", "c"], {0: "a", 1: "b", 2: "c"}) is None
    assert label_mapping(["c", "a"], ["a", "b", "c"]).tolist() == [2, 0]
    with pytest.raises(LabelError, match=r"\['d'\] \(1 of 3\) are not classes of the model"):
        label_mapping(["a", "b", "d"], ["a", "b", "c"])


# ------------------------------------------------------------------ 4. labels checked before the first step


@pytest.mark.parametrize(
    "train_labels, test_labels, names, message",
    [
        ((0, 1, 2, 3, 0, 1), (0, 1), CLASSES, r"row 3 of split 'train' .* has label 3, not a class id in 0\.\.2"),
        (
            (1, 2, 3, 1, 2, 3),
            (1, 2),
            CLASSES,
            r"row 2 of split 'train' .* has label 3, .*1\.\.N: labels must be 0-based",
        ),
        ((0, 1, 2, 0, -1, 2), (0, 1), CLASSES, r"row 4 of split 'train' .* has label -1 \(no label"),
        ((0, 1, 2, 0, 1, 2), (0, 1, 2, 5), CLASSES, r"row 3 of split 'test' .* has label 5"),
        ((0, 1, 2, 0, 1, 2), (0, 3), None, r"\['3'\] \(1 of 4\) are not classes of the model"),
    ],
    ids=["id-above-classes", "one-based", "minus-one", "bad-id-only-in-eval", "eval-class-absent-from-train"],
)
def test_bad_label_ids_stop_the_run_before_training_naming_the_row(
    tmp_path, train_labels, test_labels, names, message
):
    data = write_data(tmp_path / "data", train_labels, test_labels, names, names)
    with pytest.raises(LabelError, match=message):
        build_run("illama-tiny-224", data, tmp_path / "out")


def test_plain_integer_labels_are_their_own_class_ids_and_absent_ids_are_reported(tmp_path, caplog):
    write_split(tmp_path / "train.parquet", (1, 2, 3, 1), names=None)  # 1-based: class 0 has no example
    data = load_image_dataset(str(tmp_path), "train")
    assert data.label_names == ["0", "1", "2", "3"]
    assert "no example of class id(s) [0] (1-based labels?)" in caplog.text


def test_a_bad_streamed_label_is_reported_with_its_row_as_it_arrives(tmp_path):
    data = write_data(tmp_path / "data", (0, 1, 2, 0, 7, 1), (0, 1))
    run = build_run("illama-tiny-224", data, tmp_path / "out", max_steps=2, shuffle_buffer=1, streaming=True)
    stream = iter(run.trainer.train_dataset)
    assert [next(stream)["labels"] for _ in range(4)] == [0, 1, 2, 0]
    with pytest.raises(LabelError, match=r"streamed row 4 of split 'train' .* has label 7, not a class id in 0\.\.2"):
        next(stream)


# ------------------------------------------------------------------ 5, 6. illama-eval: Hub ids, missing weights


def save_tiny_classifier(folder, crop_pct=0.5):
    torch.manual_seed(0)
    config = load_preset("illama-tiny-224", **TINY_MODEL_OVERRIDES, **label_fields(CLASSES))
    ILlamaForImageClassification(config).save_pretrained(folder)
    processor = build_image_processor(16)
    processor.crop_pct = crop_pct  # not the default: tells whether the saved processor was used
    processor.save_pretrained(folder)
    return folder


def as_hub_snapshot(folder, cache, repo_id):
    """`folder` copied into a Hub cache as the `main` revision of model `repo_id` (what a download leaves)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_illama_eval_of_a_hub_id_writes_locally_and_uses_the_repos_processor(tmp_path, offline_hub, monkeypatch):
    local = save_tiny_classifier(tmp_path / "tiny")
    as_hub_snapshot(local, offline_hub, "someorg/tiny")
    data = write_data(tmp_path / "data")
    assert load_image_processor("someorg/tiny", None).crop_pct == 0.5  # the repo's preprocessor_config.json
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["--dataset", str(data), "--split", "test", "--device", "cpu"]
    assert eval_main(["--model", "someorg/tiny"] + argv) == 0
    assert os.listdir(work) == ["eval_someorg--tiny_test.json"] and not (work / "someorg").exists()
    from_hub = json.loads((work / "eval_someorg--tiny_test.json").read_text())
    assert eval_main(["--model", str(local)] + argv) == 0  # the same files as a local folder
    from_folder = json.loads((local / "eval_test.json").read_text())
    for key in ("top1", "top5", "loss", "num_images"):
        assert from_hub[key] == from_folder[key], key


def break_weights(folder, how: str) -> list[str]:
    """Drop the classifier's weights ("missing") or save the final norm at half its width ("mismatched")."""
    weights = load_file(str(folder / "model.safetensors"))
    if how == "missing":
        broken = sorted(key for key in weights if key.startswith("classifier."))
        weights = {k: v for k, v in weights.items() if k not in broken}
    else:
        broken = ["illama.norm.weight"]
        weights["illama.norm.weight"] = weights["illama.norm.weight"][:16].clone()
    save_file(weights, str(folder / "model.safetensors"))
    return broken


@pytest.mark.parametrize("how, described", [("missing", "missing (2)"), ("mismatched", "shape mismatch (1)")])
def test_inference_helpers_refuse_a_checkpoint_with_missing_or_mismatched_weights_unless_allowed(
    tmp_path, capsys, imagenet_sample_files, how, described
):
    folder = save_tiny_classifier(tmp_path / "tiny")
    broken = break_weights(folder, how)
    data = write_data(tmp_path / "data")
    argv = ["--model", str(folder), "--dataset", str(data), "--split", "test", "--device", "cpu"]
    assert eval_main(argv) == 2
    err = capsys.readouterr().err
    assert f"illama-eval: error: {folder} does not hold every weight" in err
    assert f"would be randomly initialised: {described}" in err and "--allow-missing-weights" in err
    assert all(key in err for key in broken) and "Traceback" not in err
    assert not (folder / "eval_test.json").exists()

    with pytest.raises(MissingWeightsError, match=re.escape(f"{described}: ['{broken[0]}'")):
        load_classifier(str(folder))
    with pytest.raises(MissingWeightsError):
        evaluate_saved_model(str(folder), str(data), "test")
    maps = ["--model", str(folder), "--image", str(imagenet_sample_files[0]), "--output", str(tmp_path / "m.png")]
    assert activation_maps_main(maps) == 2
    assert "illama-activation-maps: error: " in capsys.readouterr().err and not (tmp_path / "m.png").exists()

    assert eval_main(argv + ["--allow-missing-weights"]) == 0  # explicitly allowed: runs, with a warning
    assert activation_maps_main(maps + ["--allow-missing-weights"]) == 0
    assert load_classifier(str(folder), allow_missing_weights=True).illama.norm.weight.shape == (32,)


def test_fine_tuning_from_a_folder_with_missing_weights_is_refused_but_a_new_head_is_not(tmp_path):
    folder = save_tiny_classifier(tmp_path / "tiny")
    data = write_data(tmp_path / "data", train_names=["x", "y", "z"], test_names=["x", "y", "z"])
    run = build_run(folder, data, tmp_path / "ok")  # other classes: new head
    assert run.trainer.model.config.id2label == {0: "x", 1: "y", 2: "z"}
    weights = load_file(str(folder / "model.safetensors"))
    dropped = sorted(key for key in weights if key.endswith("norm.weight"))[-1]
    save_file({k: v for k, v in weights.items() if k != dropped}, str(folder / "model.safetensors"))
    with pytest.raises(MissingWeightsError, match=rf"missing \(1\): \['{dropped}'\]. Fine-tune from a complete"):
        build_run(folder, data, tmp_path / "refused")


def test_illama_eval_checks_label_ids_and_a_missing_folder(tmp_path, capsys):
    folder = save_tiny_classifier(tmp_path / "tiny")
    data = write_data(tmp_path / "data", test_labels=(0, 1, -1, 2))
    argv = ["--dataset", str(data), "--split", "test", "--device", "cpu"]
    assert eval_main(["--model", str(folder)] + argv) == 2
    assert "row 2 of split 'test'" in capsys.readouterr().err
    assert eval_main(["--model", str(tmp_path / "nope")] + argv) == 2
    assert f"illama-eval: error: no such folder: {tmp_path / 'nope'}" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. conversion never deletes foreign files


def authors_checkpoint(path):
    """A 1-block authors'-layout state dict (hidden 64, 16 px, 8 px patches, 3 classes) saved as .pth."""
    generator = torch.Generator().manual_seed(0)
    shapes = {
        "cls_token": (1, 1, 64),
        "pos_embed": (1, 5, 64),
        "patch_embed.proj.weight": (64, 3, 8, 8),
        "patch_embed.proj.bias": (64,),
        "blocks.0.norm1.weight": (64,),
        "blocks.0.attn.qkv.weight": (192, 64),
        "blocks.0.attn.proj.weight": (64, 64),
        "blocks.0.norm2.weight": (64,),
        "blocks.0.mlp.fc1.weight": (128, 64),
        "blocks.0.mlp.fc2.weight": (64, 128),
        "blocks.0.mlp.fc3.weight": (128, 64),
        "norm.weight": (64,),
        "head.weight": (3, 64),
        "head.bias": (3,),
    }
    torch.save({key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}, path)
    return path


def test_convert_overwrite_replaces_only_its_own_files_and_export_refuses_an_existing_file(tmp_path):
    checkpoint = authors_checkpoint(tmp_path / "tiny.pth")
    out = tmp_path / "converted"
    convert_checkpoint(checkpoint, out)
    written = sorted(os.listdir(out))
    (out / "my_notes.md").write_text("keep me")
    (out / "model.safetensors").write_bytes(b"stale")
    with pytest.raises(FileExistsError, match="already exists"):
        convert_checkpoint(checkpoint, out)
    convert_checkpoint(checkpoint, out, overwrite=True)
    assert sorted(os.listdir(out)) == sorted(written + ["my_notes.md"])
    assert (out / "my_notes.md").read_text() == "keep me"
    assert (out / "model.safetensors").stat().st_size > 100  # replaced by the new conversion
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".converted")]  # no temp left

    target = tmp_path / "back.pth"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        export_official(out, target)
    assert target.read_bytes() == b"precious"
    export_official(out, target, overwrite=True)
    assert set(torch.load(target, weights_only=True)) >= {"cls_token", "head.weight"}


# ------------------------------------------------------------------ 8. high-bit-depth images


def high_bit_depth_versions(gray8: np.ndarray) -> dict[str, Image.Image]:
    """The same picture as 16-bit (I;16, I;16B, I) and float (F, in [0, 1]) images."""
    sixteen = gray8.astype(np.uint16) * 257  # 255 -> 65535: the standard 8 -> 16 bit scaling
    return {
        "I;16": Image.fromarray(sixteen),
        "I;16B": Image.frombytes("I;16B", (gray8.shape[1], gray8.shape[0]), sixteen.astype(">u2").tobytes()),
        "I": Image.fromarray(sixteen.astype(np.int32)),
        "F": Image.fromarray(gray8.astype(np.float32) / 255.0),
    }


def test_16_bit_png_and_float_images_keep_their_brightness(imagenet_sample_files, tmp_path):
    gray = Image.open(imagenet_sample_files[0]).convert("L")
    gray8 = np.asarray(gray)
    png16 = tmp_path / "sixteen.png"
    Image.fromarray(gray8.astype(np.uint16) * 257).save(png16)
    images = {"png16": Image.open(png16), **high_bit_depth_versions(gray8)}
    assert images["png16"].mode == "I;16"
    processor = build_image_processor(224)
    reference = processor(gray, return_tensors="pt")["pixel_values"][0]
    for name, image in images.items():
        decoded = np.asarray(decode_image(image), dtype=np.float64)  # training path (decode -> transforms)
        assert decoded.shape == gray8.shape + (3,), name
        assert abs(decoded.mean() - gray8.mean()) <= 1.0, name  # within one 8-bit level (Pillow alone: ~255)
        assert np.abs(decoded[..., 0] - gray8).max() <= 1, name
        processed = processor(image, return_tensors="pt")["pixel_values"][0]  # image processor / pipeline path
        assert (processed - reference).abs().max().item() <= 1.0 / 255 / 0.224 + 1e-4, name

    # uint16 arrays (numpy, torch) handed to the processor: scaled by 255 / 65535 too (transformers refuses them)
    rgb8 = np.asarray(gray.convert("RGB"))
    reference = processor(rgb8, return_tensors="pt")["pixel_values"][0]
    rgb16 = rgb8.astype(np.uint16) * 257
    for name, array in {"numpy": rgb16, "torch": torch.from_numpy(rgb16.astype(np.int32)).to(torch.uint16)}.items():
        processed = processor(array, return_tensors="pt")["pixel_values"][0]
        assert torch.equal(processed, reference), name

    # a float image outside [0, 1] has no known scale: refused (and, in a data set, skipped and counted)
    too_bright = Image.fromarray(gray8.astype(np.float32))
    with pytest.raises(ValueError, match=r"F image with values in \[\d+, \d+\]: expected \[0, 1\]"):
        processor(too_bright)
    assert decode_image(too_bright) is None


# ------------------------------------------------------------------ 9. resume checks what it resumes


def fake_checkpoint(folder, step, state_text=None, weights=True):
    folder.mkdir(parents=True)
    state = {"global_step": step, "log_history": []}
    (folder / "trainer_state.json").write_text(json.dumps(state) if state_text is None else state_text)
    if weights:
        save_file({"weight": torch.zeros(2)}, folder / "model.safetensors")
    return folder


def test_resume_skips_a_truncated_or_weightless_checkpoint_for_the_previous_complete_one(tmp_path, caplog):
    fake_checkpoint(tmp_path / "checkpoint-2", 2)
    fake_checkpoint(tmp_path / "checkpoint-4", 4, weights=False)
    full = json.dumps({"global_step": 6, "log_history": [{"loss": 1.0}]})
    fake_checkpoint(tmp_path / "checkpoint-6", 6, state_text=full[: len(full) // 2])  # killed mid-write
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-6 (trainer_state.json does not parse" in caplog.text
    assert "checkpoint-4 (no weights" in caplog.text
    assert last_checkpoint(str(tmp_path / "absent")) is None


def run_record(**changes) -> dict:
    """What illama-train writes as recipe.json: the recipe's non-default fields, model and data included."""
    return tiny_recipe(**{"model": "illama-tiny-224", "dataset": "data/a", **changes}).recipe_dict()


def test_resume_record_refuses_a_changed_data_set_or_learning_rate_and_accepts_operational_changes(tmp_path):
    saved = run_record()
    assert saved["dataset"] == "data/a" and saved["learning_rate"] == 1e-3
    (tmp_path / "recipe.json").write_text(json.dumps(saved))
    assert check_resume_record(tmp_path, run_record()) == {}
    operational = run_record(
        logging_steps=5,
        dataloader_num_workers=2,
        save_strategy="steps",
        save_steps=3,
        log_level="warning",
        torch_compile=True,
        description="resumed on another machine",
    )
    assert {"logging_steps", "save_steps", "description"} <= set(operational)  # recorded, exempt from the check
    assert check_resume_record(tmp_path, operational) == {}

    for changes, message in [
        ({"learning_rate": 0.1}, r"learning_rate: 0\.001 -> 0\.1"),
        ({"dataset": "data/b"}, r"dataset: 'data/a' -> 'data/b'"),
        ({"eval_dataset": "data/c"}, r"eval_dataset: None -> 'data/c'"),  # a field set on one side only
        ({"learning_rate": 0.1, "dataset": "data/b"}, r"dataset: 'data/a' -> 'data/b'; learning_rate: 0\.001"),
    ]:
        with pytest.raises(RecipeChangedError, match=message + r".*--allow-changed-recipe"):
            check_resume_record(tmp_path, run_record(**changes))
    assert json.loads((tmp_path / "recipe.json").read_text()) == saved  # untouched by the refusals

    changed = run_record(learning_rate=0.1, dataset="data/b")
    assert set(check_resume_record(tmp_path, changed, allow_changes=True)) == {"dataset", "learning_rate"}
    assert json.loads((tmp_path / "recipe.resumed-1.json").read_text()) == saved  # kept, not rewritten

    (tmp_path / "recipe.json").write_text('{"learning_rate": 0.00')  # truncated record: no guess
    with pytest.raises(RecipeChangedError, match=r"recipe\.json does not parse"):
        check_resume_record(tmp_path, saved)


def test_illama_train_resume_checks_the_record_it_wrote(tmp_path, capsys):
    """A real run writes recipe.json; --resume with another learning rate or data set is refused before
    anything is loaded; an operational change (logging_steps) resumes, from the last complete checkpoint."""
    data = write_data(tmp_path / "data")
    other_data = write_data(tmp_path / "other", train_labels=(2, 1, 0) * 4)
    recipe = str(write_recipe(tmp_path / "r.yaml", save_strategy="steps", save_steps=1, eval_strategy="no"))
    out = tmp_path / "run"
    argv = ["--recipe", recipe, "--dataset", str(data), "--output-dir", str(out), "--no-plot"]
    assert train_main(argv) == 0
    capsys.readouterr()
    record = json.loads((out / "recipe.json").read_text())
    assert record["dataset"] == str(data) and record["learning_rate"] == 1e-3

    for extra, expected in [
        (["learning_rate=0.01"], "learning_rate: 0.001 -> 0.01"),
        (["--dataset", str(other_data)], f"dataset: '{data}' -> '{other_data}'"),
    ]:
        assert train_main(argv + ["--resume"] + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("illama-train: error: --resume with another data set or recipe") and expected in err
        assert "--allow-changed-recipe" in err and len(err.strip().splitlines()) == 1
        assert json.loads((out / "recipe.json").read_text()) == record
    assert not list(out.glob("recipe.resumed-*"))

    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    state = (out / "checkpoint-3" / "trainer_state.json").read_text()
    (out / "checkpoint-3" / "trainer_state.json").write_text(state[: len(state) // 2])  # killed mid-write
    assert train_main(argv + ["--resume", "logging_steps=2"]) == 0  # operational: accepted
    log = (out / "train.log").read_text()
    assert "skipping incomplete checkpoint" in log and f"resuming from {out / 'checkpoint-2'}" in log
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert json.loads((out / "recipe.json").read_text()) == {**record, "logging_steps": 2}


def test_illama_train_resume_skips_a_checkpoint_whose_optimizer_scheduler_or_rng_file_is_damaged(tmp_path, capsys):
    """End to end: the newest checkpoint's optimizer.pt truncated, then its scheduler.pt, then its rng_state.pth
    replaced by text: each --resume warns, skips it for the previous complete one and finishes (exit 0)."""
    data = write_data(tmp_path / "data")
    recipe = str(write_recipe(tmp_path / "r.yaml", save_strategy="steps", save_steps=1, eval_strategy="no"))
    out = tmp_path / "run"
    argv = ["--recipe", recipe, "--dataset", str(data), "--output-dir", str(out), "--no-plot"]
    assert train_main(argv) == 0
    for name, damage in [
        ("optimizer.pt", lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])),
        ("scheduler.pt", lambda path: path.write_bytes(path.read_bytes()[:-40])),
        ("rng_state.pth", lambda path: path.write_text("not a torch file")),
    ]:
        newest = max(out.glob("checkpoint-*"), key=lambda path: int(path.name.rpartition("-")[2]))
        previous = out / f"checkpoint-{int(newest.name.rpartition('-')[2]) - 1}"
        damage(newest / name)
        (out / "train.log").write_text("")
        assert train_main(argv + ["--resume"]) == 0, capsys.readouterr().err[-2000:]
        log = (out / "train.log").read_text()
        assert f"skipping incomplete checkpoint {newest}" in log and f"{name} is truncated or damaged" in log
        assert f"resuming from {previous}" in log
        assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3


# ------------------------------------------------------------------ 10. masks at large inputs


def test_post_softmax_sdpa_builds_no_mask_at_any_size_or_grad_mode_and_eager_keeps_only_its_own_size(mask_builds):
    """Post-softmax attention on "sdpa" takes r as a number and never asks for M (fused_attention_illama), so the
    model builds no mask for it: not at a large input, not in training. Eager reads M: one mask per forward (not
    one per layer), kept only for the model's own token count."""
    torch.manual_seed(0)
    config = load_preset("illama-tiny-224", **{**TINY_MODEL_OVERRIDES, "num_hidden_layers": 2}, num_labels=3)
    model = ILlamaForImageClassification(config).eval()
    assert model.config._attn_implementation == "sdpa" and model.config.mask_style == "post_softmax"
    model.set_soft_mask_rate(0.37)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    built = mask_builds  # (N, r, style, dtype, device) of each mask built
    pixels = torch.randn(2, 3, 128, 128)  # 16 x 16 patches + the class token = 257 tokens
    with torch.no_grad():
        fused = model(pixel_values=pixels, interpolate_pos_encoding=True).logits
        assert built == []  # never built
        reference = eager(pixel_values=pixels, interpolate_pos_encoding=True).logits  # materialises M
        assert [n for n, *_ in built] == [257]  # once for both layers
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)

    model.train()  # autograd, any path of the fused module: still no mask
    for path in ("auto", "fused", "recompute", "materialised"):
        model.set_post_softmax_path(path)
        model(pixel_values=pixels, interpolate_pos_encoding=True).logits.sum().backward()
    with torch.no_grad():
        model(pixel_values=torch.randn(1, 3, 16, 16))  # the model's own resolution
    assert [n for n, *_ in built] == [257]

    eager.train()  # eager training: built again at 257 tokens (not kept), once for both layers
    eager(pixel_values=pixels, interpolate_pos_encoding=True).logits.sum().backward()
    assert [n for n, *_ in built] == [257, 257]
    with torch.no_grad():  # the model's own resolution (5 tokens) keeps its small mask, built once
        eager.eval()
        eager(pixel_values=torch.randn(1, 3, 16, 16))
        eager(pixel_values=torch.randn(1, 3, 16, 16))
    assert [n for n, *_ in built] == [257, 257, 5]
    held = [name for name, tensor in eager.illama.named_buffers() if tensor.shape[-2:] == (257, 257)]
    assert not held and not [k for k, v in vars(eager.illama).items() if torch.is_tensor(v)]  # nothing on the model


# ------------------------------------------------------------------ 11. one-line errors


def test_an_override_without_equals_sign_is_a_one_line_error(tmp_path, capsys):
    argv = ["--recipe", str(write_recipe(tmp_path / "r.yaml")), "--dataset", str(tmp_path), "--output-dir"]
    assert train_main(argv + [str(tmp_path / "out"), "epochs10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "illama-train: error: override 'epochs10' must look like key=value (e.g. num_train_epochs=10)"


def test_data_errors_are_one_line_and_name_the_file(tmp_path, monkeypatch):
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.parquet is empty \(0 bytes\)"):
        load_image_dataset(str(tmp_path / "empty.parquet"), "train")
    Dataset.from_dict({"image": [], "label": []}).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(ValueError, match=r"train\.parquet holds no rows"):
        load_image_dataset(str(tmp_path), "train")
    monkeypatch.chdir(tmp_path)
    for missing in ("./nope", str(tmp_path / "nope"), "data/cifar10/train", "empty.parquet/x", "nope.parquet"):
        with pytest.raises(FileNotFoundError, match=r"no such folder or file|no parquet file matches"):
            load_image_dataset(missing, "train")


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty-parquet", r"empty\.parquet is empty \(0 bytes\)"),
        ("missing-folder", r"no such folder or file"),
        ("unreachable-hub", r"is no local folder or file, and the Hub data set 'someorg/images' cannot be reached"),
    ],
)
def test_illama_train_and_eval_report_bad_data_in_one_line(tmp_path, capsys, monkeypatch, case, message):
    import datasets

    if case == "empty-parquet":
        (tmp_path / "empty.parquet").write_bytes(b"")
        data = str(tmp_path / "empty.parquet")
    elif case == "missing-folder":
        data = str(tmp_path / "nope")
    else:
        data = "someorg/images"

        def unreachable(*args, **kwargs):
            raise ConnectionError("Couldn't reach 'someorg/images' on the Hub (LocalEntryNotFoundError)")

        monkeypatch.setattr(datasets, "load_dataset", unreachable)
    recipe = str(write_recipe(tmp_path / "r.yaml"))
    model = save_tiny_classifier(tmp_path / "tiny")
    for prog, run in [
        (
            "illama-train",
            lambda: train_main(["--recipe", recipe, "--dataset", data, "--output-dir", str(tmp_path / "o")]),
        ),
        ("illama-eval", lambda: eval_main(["--model", str(model), "--dataset", data, "--split", "test"])),
    ]:
        assert run() == 2, prog
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith(f"{prog}: error: ")]
        assert len(errors) == 1 and re.search(message, errors[0]), (prog, err)
        assert not any("Traceback" in line for line in err), prog


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("random.safetensors", os.urandom(256), r"is not a valid safetensors file \(.*header"),
        ("zero.pth", b"", r"is empty \(0 bytes\)"),
        ("random.pth", bytes(range(200, 256)) * 4, r"is not a PyTorch checkpoint"),
    ],
)
def test_broken_checkpoint_files_get_an_accurate_error(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        convert_checkpoint(tmp_path / name, tmp_path / "out")
    assert "pickled object" not in str(error.value)
    assert convert_main(["--checkpoint", str(tmp_path / name), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("illama-convert: error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
