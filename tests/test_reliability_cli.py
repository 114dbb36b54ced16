"""Every failure is one `illama-<tool>: error: ...` line with exit status 2; the traceback only with `--debug` or
ILLAMA_DEBUG=1. In-process `main(argv)` calls, and one subprocess where the printed line itself is asserted."""

import os
import pickle
import string
import subprocess
import sys

import pytest

from modeling_illama import ILlamaConfig, ILlamaForImageClassification
from modeling_illama.cli.analyze import main as analyze_main
from modeling_illama.cli.convert import main as convert_main
from modeling_illama.cli.eval import main as eval_main
from modeling_illama.cli.train import main as train_main

TINY = dict(image_size=16, patch_size=8, hidden_size=32, num_attention_heads=1, num_hidden_layers=1, num_labels=3)


def one_error_line(capsys, prog):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(prog) and ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "tiny"
    ILlamaForImageClassification(ILlamaConfig(**TINY)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_eval_and_analyze_name_a_damaged_safetensors_file(tiny_folder, tmp_path, capsys, damage):
    weights = tiny_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100] if damage == "truncated" else b"")
    assert eval_main(["--model", str(tiny_folder), "--dataset", str(tmp_path), "--split", "test"]) == 2
    line = one_error_line(capsys, "illama-eval")
    assert "model.safetensors is damaged" in line and ("truncated" in line or "empty" in line)
    argv = ["calibration", "--model", str(tiny_folder), "--dataset", str(tmp_path), "--output-dir", str(tmp_path)]
    assert analyze_main(argv) == 2
    assert "model.safetensors is damaged" in one_error_line(capsys, "illama-analyze")


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickled_command_in_pytorch_model_bin_is_refused_in_one_line(tiny_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tiny_folder / "model.safetensors").unlink()
    with open(tiny_folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump(RunsACommand(), handle)
    assert eval_main(["--model", str(tiny_folder), "--dataset", str(tmp_path), "--split", "test"]) == 2
    line = one_error_line(capsys, "illama-eval")
    assert "refused to load the weights" in line and "nothing from it was executed" in line
    assert not (tmp_path / "pwned.txt").exists()


def test_convert_gives_one_line_for_a_text_file_named_pth_whatever_its_first_character(tmp_path, capsys):
    path = tmp_path / "notes.pth"
    for first in string.printable[:94]:
        path.write_text(first + "some notes, not a checkpoint\n")
        assert convert_main(["--checkpoint", str(path), "--output-dir", str(tmp_path / "out")]) == 2, first
        line = one_error_line(capsys, "illama-convert")  # "c" reads as a pickle GLOBAL: refused, not run
        assert "is not a PyTorch checkpoint" in line or "refused to load" in line, first
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, module", [("quantize", "torchao"), ("export-onnx", "onnxruntime")])
def test_analyze_without_the_analysis_extra_names_it(tiny_folder, tmp_path, capsys, monkeypatch, command, module):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a))
    extra = ["--dataset", str(tmp_path), "--split", "test"] if command == "quantize" else []
    assert analyze_main([command, "--model", str(tiny_folder), "--output-dir", str(tmp_path)] + extra) == 2
    line = one_error_line(capsys, "illama-analyze")
    assert f"{module} not installed: this command needs the [analysis] extra" in line
    assert "pip install 'illama-transformers[analysis]'" in line


def test_a_missing_optional_module_met_later_names_its_extra(capsys):
    from modeling_illama.cli._common import one_line_errors

    @one_line_errors("illama-tool")
    def needs_onnx(argv=None):
        raise ModuleNotFoundError("No module named 'onnxscript'", name="onnxscript")

    assert needs_onnx([]) == 2
    assert "onnxscript not installed: this command needs the [analysis] extra" in one_error_line(capsys, "illama-tool")


def test_a_negative_learning_rate_is_one_line(tmp_path, capsys):
    argv = ["--recipe", "cifar10-mini", "--dataset", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    assert train_main(argv + ["learning_rate=-0.1"]) == 2
    assert "'learning_rate' must be > 0, got -0.1" in one_error_line(capsys, "illama-train")


def test_a_config_value_out_of_range_and_an_empty_data_folder_are_one_line(tmp_path, capsys):
    from tiny_data import write_tiny_image_splits

    data = write_tiny_image_splits(tmp_path / "data", n_train=6, n_test=3)
    argv = ["--recipe", "cifar10-mini", "--dataset", str(data), "--output-dir", str(tmp_path / "o")]
    assert train_main(argv + ["model_overrides.hidden_size=-8"]) == 2
    line = one_error_line(capsys, "illama-train")
    assert line == "illama-train: error: ILlamaConfig.hidden_size must be a positive integer, got -8."
    (tmp_path / "empty").mkdir()
    argv = ["--recipe", "cifar10-mini", "--dataset", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")]
    assert train_main(argv) == 2
    assert "empty is an empty folder: expected parquet files" in one_error_line(capsys, "illama-train")


def test_zero_or_negative_limits_are_refused_not_read_as_everything(tiny_folder, tmp_path, capsys):
    base = ["--model", str(tiny_folder), "--dataset", str(tmp_path), "--split", "test"]
    for option, value, message in [
        ("--limit", "0", "must be a positive integer, got 0"),
        ("--batch-size", "-4", "must be a positive integer, got -4"),
        ("--num-workers", "-1", "must be >= 0, got -1"),
    ]:
        with pytest.raises(SystemExit) as stop:
            eval_main(base + [option, value])
        assert stop.value.code == 2
        assert f"argument {option}: {message}" in one_error_line(capsys, "illama-eval")


def test_paths_that_are_files_or_full_disks_are_one_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["--recipe", "cifar10-mini", "--dataset", str(tmp_path), "--output-dir", str(tmp_path / "file")]
    assert train_main(argv) == 2
    assert "file" in one_error_line(capsys, "illama-train")
    if os.path.exists("/dev/full"):
        from modeling_illama.cli import _common

        @_common.one_line_errors("illama-tool")
        def writes(argv=None):
            with open("/dev/full", "w") as handle:
                handle.write("results" * 1000)
            return 0

        assert writes([]) == 2
        assert "No space left on device" in one_error_line(capsys, "illama-tool")


def test_debug_flag_and_environment_show_the_traceback(tiny_folder, tmp_path, monkeypatch):
    (tiny_folder / "model.safetensors").write_bytes(b"")
    argv = ["--model", str(tiny_folder), "--dataset", str(tmp_path), "--split", "test"]
    with pytest.raises(ValueError, match="model.safetensors is damaged"):
        eval_main(argv + ["--debug"])
    monkeypatch.setenv("ILLAMA_DEBUG", "1")
    with pytest.raises(ValueError, match="model.safetensors is damaged"):
        eval_main(argv)


def test_the_console_line_itself(tiny_folder, tmp_path):
    (tiny_folder / "model.safetensors").write_bytes(b"\x00" * 50)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    env.pop("ILLAMA_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "modeling_illama.cli.eval", "--model", str(tiny_folder), "--dataset", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("illama-eval")]
    assert lines == [
        f"illama-eval: error: {tiny_folder / 'model.safetensors'} is damaged: model.safetensors has no valid "
        "safetensors header (JSONDecodeError); re-save or re-download the model folder"
    ], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
