"""Files that must not be lost or half-read: `--overwrite` removes only what a run writes and only after every
check, single output files are never written over without `--overwrite`, and damaged checkpoint files are
found from their headers and skipped on resume."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from tiny_data import TINY_MODEL_OVERRIDES, tiny_recipe_fields, write_tiny_image_splits

from modeling_illama.cli.activation_maps import build_parser as activation_maps_parser
from modeling_illama.cli.analyze import main as analyze_main
from modeling_illama.cli.eval import main as eval_main
from modeling_illama.cli.robustness import main as robustness_main
from modeling_illama.cli.train import main as train_main
from modeling_illama.training.output_dir import (
    CARD_MARKER,
    OutputDirError,
    claim_output_dir,
    is_run_card,
    prepare_output_dir,
    remove_run_outputs,
)
from modeling_illama.training.resume import last_checkpoint
from modeling_illama.utils.file_checks import safetensors_problem, torch_file_problem

PREVIOUS_CARD = f"---\nlibrary_name: transformers\n---\n\n{CARD_MARKER}\n\n# run\n\nold run\n"


def old_run(folder):
    """A previous run's outputs (its model card included) plus the user's own files that only look like them."""
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "trainer_state.json", "all_results.json", "train.log"):
        (folder / name).write_text("old run")
    (folder / "README.md").write_text(PREVIOUS_CARD)
    (folder / "checkpoint-4").mkdir()
    mine = (
        "my_results.json",
        "results_eval.json",
        "pytorch_model.bin",
        "README.txt",
        "labels.py",
        "model-v2.safetensors",
    )
    for name in mine:
        (folder / name).write_text("mine")
    return mine


def test_overwrite_removes_exact_run_outputs_and_keeps_look_alikes(tmp_path):
    mine = old_run(tmp_path / "run")
    removed = prepare_output_dir(tmp_path / "run", overwrite=True)
    assert set(removed) == {"config.json", "model.safetensors", "trainer_state.json", "all_results.json"} | {
        "train.log",
        "checkpoint-4",
        "README.md",
    }
    assert sorted(os.listdir(tmp_path / "run")) == sorted(mine)


def test_overwrite_removes_a_lora_runs_adapter_and_merged_model_and_keeps_a_users_merged_notes(tmp_path):
    """A LoRA run's folder (adapter, labels, merged model) counts as a model and is replaced whole by --overwrite:
    a stale adapter_config.json would make Transformers load the new full model as an adapter."""
    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "labels.json", "merged/config.json"):
        (run / name).write_text("old adapter run")
    (tmp_path / "other" / "merged").mkdir(parents=True)
    (tmp_path / "other" / "merged" / "notes.txt").write_text("the user's")
    (tmp_path / "other" / "config.json").write_text("{}")
    with pytest.raises(OutputDirError, match="--overwrite"):
        prepare_output_dir(run, overwrite=False)
    removed = prepare_output_dir(run, overwrite=True)
    assert set(removed) == {"adapter_config.json", "adapter_model.safetensors", "labels.json", "merged"}
    assert os.listdir(run) == []
    assert "merged" not in prepare_output_dir(tmp_path / "other", overwrite=True)  # no model inside: not a run's
    assert (tmp_path / "other" / "merged" / "notes.txt").read_text() == "the user's"


def test_overwrite_claims_first_and_removes_last_cutting_the_old_lines_from_train_log(tmp_path):
    mine = old_run(tmp_path / "run")
    lock = claim_output_dir(tmp_path / "run", overwrite=True, remove=False)
    assert (tmp_path / "run" / "model.safetensors").read_text() == "old run"  # the claim removed nothing
    with open(tmp_path / "run" / "train.log", "a") as log:  # the new run's logging, appending
        log.write("new run: checks passed\n")
        log.flush()
        removed = remove_run_outputs(tmp_path / "run")
        log.write("new run: training\n")
    lock.release()
    assert "train.log (the previous run's 7 bytes)" in removed and "model.safetensors" in removed
    assert (tmp_path / "run" / "train.log").read_text() == "new run: checks passed\nnew run: training\n"
    assert sorted(os.listdir(tmp_path / "run")) == sorted([*mine, "train.log"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model_overrides.num_hidden_layer=1", "did you mean"),
        ("learning_rate=-0.1", "'learning_rate' must be > 0"),
        ("dataset=/nonexistent/data", "no such folder or file"),
    ],
)
def test_overwrite_deletes_nothing_when_a_check_fails(tmp_path, capsys, override, message):
    import yaml

    data = write_tiny_image_splits(tmp_path / "data", n_train=6, n_test=3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_fields(TINY_MODEL_OVERRIDES, dataset=str(data))))
    old_run(tmp_path / "run")
    before = {name: (tmp_path / "run" / name).stat().st_mtime_ns for name in os.listdir(tmp_path / "run")}
    argv = ["--recipe", str(recipe), "--output-dir", str(tmp_path / "run"), "--overwrite", override]
    assert train_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("illama-train: error: ")]
    assert len(err) == 1 and message in err[0], err
    assert (tmp_path / "run" / "model.safetensors").read_text() == "old run"
    assert (tmp_path / "run" / "checkpoint-4").is_dir()
    assert set(before) <= set(os.listdir(tmp_path / "run"))


def test_illama_train_overwrite_replaces_the_previous_run_and_keeps_the_users_files(tmp_path, capsys):
    import yaml

    data = write_tiny_image_splits(tmp_path / "data", n_train=6, n_test=3)
    fields = tiny_recipe_fields(TINY_MODEL_OVERRIDES, dataset=str(data), num_train_epochs=1, save_strategy="no")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**fields, "eval_strategy": "no"}))
    mine = old_run(tmp_path / "run")
    argv = ["--recipe", str(tmp_path / "r.yaml"), "--output-dir", str(tmp_path / "run"), "--overwrite", "--no-plot"]
    assert train_main(argv) == 0, capsys.readouterr().err[-2000:]
    folder = tmp_path / "run"
    assert not (folder / "checkpoint-4").exists() and (folder / "model.safetensors").read_bytes() != b"old run"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "illama"
    assert (
        "old run" not in (folder / "train.log").read_text() and "final metrics" in (folder / "train.log").read_text()
    )
    for name in mine:
        assert (folder / name).read_text() == "mine", name
    card = (folder / "README.md").read_text()  # the previous run's card, replaced by this run's
    assert "old run" not in card and CARD_MARKER in card and is_run_card(folder / "README.md")


@pytest.mark.parametrize("previous_run", [False, True])
def test_illama_train_refuses_a_readme_of_the_users_before_training_even_with_overwrite(
    tmp_path, capsys, previous_run
):
    import yaml

    data = write_tiny_image_splits(tmp_path / "data", n_train=6, n_test=3)
    fields = tiny_recipe_fields(TINY_MODEL_OVERRIDES, dataset=str(data), max_steps=1, save_strategy="no")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**fields, "eval_strategy": "no"}))
    folder = tmp_path / "run"
    if previous_run:
        old_run(folder)
    else:
        folder.mkdir()
    (folder / "README.md").write_text("# My notes\n\nwhat I keep about these runs\n")
    before = {name: (folder / name).stat().st_mtime_ns for name in os.listdir(folder)}
    argv = ["--recipe", str(tmp_path / "r.yaml"), "--output-dir", str(folder), "--no-plot"]
    assert train_main(argv + ["--overwrite"] * previous_run) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("illama-train: error: ")]
    assert len(err) == 1 and f"{folder / 'README.md'} is not a model card written by illama-train" in err[0], err
    assert "move it away or choose another --output-dir" in err[0]
    assert (folder / "README.md").read_text() == "# My notes\n\nwhat I keep about these runs\n"
    assert {name: (folder / name).stat().st_mtime_ns for name in os.listdir(folder)} == before  # nothing written


def test_a_card_of_this_package_is_told_from_the_users_readme(tmp_path):
    from modeling_illama.training.model_card import render_training_card

    card = render_training_card("run", {}, {}, [], model="illama-tiny-224", dataset="data/mini", eval_split=None)
    for name, text, ours in [
        ("card.md", card, True),
        ("old_card.md", card.replace(CARD_MARKER, ""), True),  # written before the marker existed
        ("notes.md", "# run\n\ntrained with `illama-train`.\n", False),
        ("hub.md", "---\nlibrary_name: transformers\n---\n\n# someone's model\n", False),
    ]:
        (tmp_path / name).write_text(text)
        assert is_run_card(tmp_path / name) is ours, name


def test_single_output_files_are_not_written_over_without_overwrite(tmp_path, capsys):
    image, existing = tmp_path / "cat.png", tmp_path / "maps.png"
    image.write_bytes(b"png")
    existing.write_bytes(b"earlier maps")
    parser = activation_maps_parser()
    base = ["--model", str(tmp_path), "--image", str(image)]
    for argv, message in [
        (base + ["--output", str(existing)], "maps.png exists; pass --overwrite"),
        (base + ["--output", str(image), "--overwrite"], "cat.png is the input --image; write elsewhere"),
        (base + ["--output", str(tmp_path)], "is a folder; give a file name"),
        (base + ["--output", str(tmp_path / "no" / "maps.png")], "no such folder"),
        (base + ["--output", str(tmp_path / "new.png"), "--json", str(existing)], "maps.png exists"),
    ]:
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
    args = parser.parse_args(base + ["--output", str(existing), "--overwrite"])
    assert args.output == str(existing) and existing.read_bytes() == b"earlier maps"


# ------------------------------------------------------------------ files a command names itself


def one_error_line(capsys, prog):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.fixture
def model_loads(monkeypatch):
    """Every model load of the evaluating tools, recorded (and stopped): a refusal must come before any."""
    from transformers import AutoModelForImageClassification

    import modeling_illama.loading

    loads = []

    def load(model, *args, **kwargs):
        loads.append(model)
        raise AssertionError(f"{model} loaded before the output files were checked")

    monkeypatch.setattr(modeling_illama.loading, "load_classifier", load)
    monkeypatch.setattr(AutoModelForImageClassification, "from_pretrained", load)
    return loads


@pytest.fixture
def tiny_classifier(tmp_path):
    """A saved one-block iLLaMA over the classes of write_tiny_image_splits, and that data."""
    from modeling_illama import ILlamaConfig, ILlamaForImageClassification

    config = ILlamaConfig(
        image_size=16, patch_size=8, hidden_size=32, num_attention_heads=1, num_hidden_layers=1, num_labels=3,
        id2label=dict(enumerate("abc")), label2id={name: i for i, name in enumerate("abc")},
    )  # fmt: skip
    ILlamaForImageClassification(config).save_pretrained(tmp_path / "model")
    return tmp_path / "model", write_tiny_image_splits(tmp_path / "data", n_train=3, n_test=3)


def test_illama_eval_refuses_its_default_file_before_evaluating(
    tiny_classifier, model_loads, tmp_path, capsys, monkeypatch
):
    model, data = tiny_classifier
    default = model / "eval_test.json"
    default.write_text("earlier evaluation")
    mtime = default.stat().st_mtime_ns
    argv = ["--model", str(model), "--dataset", str(data), "--split", "test"]
    assert eval_main(argv) == 2
    line = one_error_line(capsys, "illama-eval")
    assert f"{default} exists; pass --overwrite to replace it, or give --output FILE to write elsewhere" in line
    assert default.read_text() == "earlier evaluation" and default.stat().st_mtime_ns == mtime
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "confusion_matrix.png").write_text("earlier plot")
    assert eval_main(argv + ["--output", str(tmp_path / "new.json"), "--plots", str(tmp_path / "plots")]) == 2
    assert "confusion_matrix.png exists; pass --overwrite" in one_error_line(capsys, "illama-eval")
    assert model_loads == [] and not (tmp_path / "new.json").exists()
    monkeypatch.undo()
    assert eval_main(argv + ["--overwrite"]) == 0, capsys.readouterr().err[-2000:]
    assert json.loads(default.read_text())["num_images"] == 3


ANALYSES = {  # subcommand: its options besides --model / --output-dir, and one file it writes
    "calibration": (["--split", "test"], "reliability_diagram.png"),
    "shape-bias": (["--stimuli", "."], "shape_bias.png"),
    "attention-rank": (["--split", "test", "--num-images", "2"], "attention_rank.json"),
    "quantize": (["--split", "test", "--latency-repeats", "1"], "model"),  # the quantized model's folder
    "export-onnx": ([], "onnx_16.png"),  # named by the model's resolution
}


@pytest.mark.parametrize("command", ANALYSES)
def test_illama_analyze_refuses_an_earlier_runs_files_before_measuring(
    tiny_classifier, model_loads, tmp_path, capsys, monkeypatch, command
):
    import modeling_illama.cli.analyze as analyze

    # the check comes before any use of an extra
    monkeypatch.setattr(analyze.common, "missing_extra", lambda *args: None)
    model, data = tiny_classifier
    options, existing = ANALYSES[command]
    out = tmp_path / "out"
    out.mkdir()
    if existing == "model":
        (out / existing).mkdir()
    else:
        (out / existing).write_text("earlier")
    dataset = ["--dataset", str(data)] if "--split" in options else []
    argv = [command, "--model", str(model), *dataset, *options, "--output-dir", str(out)]
    assert analyze_main(argv) == 2
    line = one_error_line(capsys, f"illama-analyze {command}")
    assert f"{out / existing} exists; pass --overwrite to replace it, or give --output-dir another folder" in line
    assert model_loads == [] and os.listdir(out) == [existing]
    assert existing == "model" or (out / existing).read_text() == "earlier"


@pytest.mark.parametrize("command", ["calibration", "attention-rank", "quantize"])
def test_illama_analyze_overwrite_replaces_exactly_the_files_it_checks(tiny_classifier, tmp_path, capsys, command):
    from modeling_illama.cli.analyze import build_parser, output_files

    model, data = tiny_classifier
    out = tmp_path / "out"
    dataset = ["--dataset", str(data)] if "--split" in ANALYSES[command][0] else []
    argv = [command, "--model", str(model), *dataset, *ANALYSES[command][0], "--output-dir", str(out)]
    planned = output_files(build_parser().parse_args(argv))
    out.mkdir()
    earlier = [os.path.join(path, "config.json") if path.endswith("model") else path for path in planned]
    for path in earlier:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write("earlier")
    assert analyze_main(argv) == 2 and "exist; pass --overwrite to replace them" in capsys.readouterr().err
    assert analyze_main(argv + ["--overwrite"]) == 0, capsys.readouterr().err[-2000:]
    assert sorted(os.listdir(out)) == sorted(os.path.basename(path) for path in planned)
    assert all(open(path, "rb").read() != b"earlier" for path in earlier)


def test_illama_robustness_refuses_its_default_file_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from PIL import Image
    from tiny_models import tiny_vit_classifier
    from transformers import AutoModelForImageClassification

    from modeling_illama.analysis.robustness import subset_wnids

    model = tmp_path / "model"
    tiny_vit_classifier(num_labels=1000, hidden_size=32, num_hidden_layers=1, intermediate_size=64).save_pretrained(
        model
    )
    for i, wnid in enumerate(subset_wnids("imagenet-a")[:2]):
        (tmp_path / "a" / wnid).mkdir(parents=True)
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / "a" / wnid / f"{i}.png")
    default = model / "robustness.json"
    default.write_text("earlier results")
    loads = []
    monkeypatch.setattr(AutoModelForImageClassification, "from_pretrained", lambda *args, **kw: loads.append(args))
    argv = ["--model", str(model), "--imagenet-a", str(tmp_path / "a")]
    assert robustness_main(argv) == 2
    line = one_error_line(capsys, "illama-robustness")
    assert f"{default} exists; pass --overwrite to replace it, or give --output FILE to write elsewhere" in line
    assert loads == [] and default.read_text() == "earlier results"
    monkeypatch.undo()
    assert robustness_main(argv + ["--overwrite"]) == 0, capsys.readouterr().err[-2000:]
    assert json.loads(default.read_text())["imagenet_a"]["images"] == 2


# ------------------------------------------------------------------ damaged checkpoint files


def checkpoint(folder, step):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    save_file({"weight": torch.arange(64, dtype=torch.float32)}, folder / "model.safetensors")
    torch.save({"state": {0: {"exp_avg": torch.ones(64)}}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    torch.save({"python": 1, "cpu": torch.get_rng_state()}, folder / "rng_state.pth")
    return folder


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: truncate(f / "model.safetensors"), "model.safetensors is truncated"),
        (lambda f: (f / "model.safetensors").write_bytes(b""), "model.safetensors is empty"),
        (lambda f: truncate(f / "optimizer.pt"), "optimizer.pt is truncated or damaged"),
        (lambda f: truncate(f / "scheduler.pt", 0.9), "scheduler.pt is truncated or damaged"),
        (lambda f: (f / "rng_state.pth").write_text("not a torch file"), "rng_state.pth is truncated or damaged"),
    ],
)
def test_resume_skips_a_checkpoint_with_a_damaged_file_with_a_warning(tmp_path, caplog, damage, message):
    checkpoint(tmp_path / "checkpoint-2", 2)
    damage(checkpoint(tmp_path / "checkpoint-4", 4))
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert "skipping incomplete checkpoint" in caplog.text and message in caplog.text


def test_header_checks_accept_complete_files_and_name_the_fault(tmp_path):
    save_file({"a": torch.zeros(10), "b": torch.ones(3, 3)}, tmp_path / "w.safetensors")
    torch.save({"a": torch.zeros(3)}, tmp_path / "s.pt")
    assert safetensors_problem(tmp_path / "w.safetensors") is None and torch_file_problem(tmp_path / "s.pt") is None
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    assert "truncated" in safetensors_problem(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:20])
    assert "header alone needs" in safetensors_problem(tmp_path / "head.safetensors")
    (tmp_path / "text.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    assert "no valid safetensors header" in safetensors_problem(tmp_path / "text.safetensors")
