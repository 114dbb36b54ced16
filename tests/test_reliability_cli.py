"""Every failure is one `illama-<tool>: error: ...` line with exit status 2; the traceback only with `--debug` or
ILLAMA_DEBUG=1. In-process `main(argv)` calls, and one subprocess where the printed line itself is asserted."""

import os
import pickle
import string
import subprocess
import sys
from pathlib import Path

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


def test_a_path_that_is_a_file_is_one_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["--recipe", "cifar10-mini", "--dataset", str(tmp_path), "--output-dir", str(tmp_path / "file")]
    assert train_main(argv) == 2
    assert "file" in one_error_line(capsys, "illama-train")


# ------------------------------------------------------------- full disks and file-size limits name the path
# A file-size limit (RLIMIT_FSIZE) makes every write past it fail with EFBIG, as a full disk does with ENOSPC:
# the OS names no file, and safetensors and torch.save report it as their own errors.
WRITERS = {
    "python": "open(path, 'w').write('x' * 100_000)",
    "json": "import json; json.dump({'x': 'y' * 100_000}, open(path, 'w'))",
    "safetensors": "import torch, safetensors.torch as st; st.save_file({'x': torch.zeros(100_000)}, path)",
    "torch.save": "import torch; torch.save({'x': torch.zeros(100_000)}, path)",
    "matplotlib": "import matplotlib; matplotlib.use('Agg'); from matplotlib import pyplot; "
    "pyplot.figure().savefig(path, dpi=600, format='png')",
}


def limited_run(command: list[str], limit_bytes: int | None, cwd, **env_changes) -> subprocess.CompletedProcess:
    """`python *command` in a child process whose files may not grow past `limit_bytes` (None: no limit)."""
    import resource

    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    env.update(env_changes)
    env.pop("ILLAMA_DEBUG", None)
    return subprocess.run(
        [sys.executable, *command], preexec_fn=limit, capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as on Linux")
@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_over_the_size_limit_names_its_path_inside_writing_to(tmp_path, writer):
    path = tmp_path / "out" / "result.bin"
    path.parent.mkdir()
    code = (
        "import sys\nfrom modeling_illama.utils.writing import writing_to\n"
        f"path = {str(path)!r}\n"
        "try:\n"
        f"    with writing_to(path):\n        {WRITERS[writer]}\n"
        "except OSError as error:\n    print(type(error).__name__, error.errno, error.filename, '|', error)\n"
    )
    done = limited_run(["-c", code], 20_000, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("OSError ") and f" {path} | " in done.stdout, done.stdout + done.stderr[-2000:]
    assert "File too large" in done.stdout or "write failed" in done.stdout, done.stdout


def test_writing_to_leaves_other_errors_and_named_files_alone(tmp_path):
    from modeling_illama.utils.writing import writing_to

    with pytest.raises(ValueError, match="not a write"):
        with writing_to(tmp_path):
            raise ValueError("not a write")
    with pytest.raises(FileNotFoundError) as raised:  # the OS named the file: kept as it is
        with writing_to(tmp_path / "elsewhere"):
            open(tmp_path / "missing" / "file.txt", "w")
    assert raised.value.filename == str(tmp_path / "missing" / "file.txt")
    with pytest.raises(OSError) as raised:  # an unnamed ENOSPC gets the path
        with writing_to(tmp_path / "out.json"):
            raise OSError(28, "No space left on device")
    assert str(raised.value) == f"[Errno 28] No space left on device: '{tmp_path / 'out.json'}'"


def tiny_training_data(tmp_path):
    import yaml
    from tiny_data import TINY_MODEL_OVERRIDES, tiny_recipe_fields, write_tiny_image_splits

    data = write_tiny_image_splits(tmp_path / "data", n_train=16, n_test=4)
    recipe = tmp_path / "recipe.yaml"
    fields = tiny_recipe_fields(TINY_MODEL_OVERRIDES, num_train_epochs=1, eval_strategy="no", save_strategy="epoch")
    recipe.write_text(yaml.safe_dump(fields))
    return data, recipe


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as on Linux")
def test_each_writing_tool_names_its_output_on_a_size_limit_in_one_line(tiny_folder, tmp_path):
    """illama-train (the checkpoint's safetensors), illama-eval (the data set's Arrow cache, then, with the cache
    filled, its JSON), illama-export-official (torch.save, whose own error names no reason), illama-analyze (its
    JSON), illama-activation-maps (the PNG) and illama-convert (its safetensors): `illama-<tool>: error: ... '<path>'`, exit 2, no traceback."""
    data, recipe = tiny_training_data(tmp_path)
    cache = str(tmp_path / "datasets-cache")
    evaluate = ["-m", "modeling_illama.cli.eval", "--model", str(tiny_folder), "--dataset", str(data), "--split"]
    output = {name: str(tmp_path / name) for name in ("run", "first.json", "eval.json", "official.pth")}
    runs = [  # (tool, arguments, file-size limit, the path its error line names; None: a run that succeeds)
        (
            "illama-train",
            [
                "-m",
                "modeling_illama.cli.train",
                "--recipe",
                str(recipe),
                "--dataset",
                str(data),
                "--output-dir",
                output["run"],
            ],
            30_000,
            output["run"],
        ),
        ("illama-eval", [*evaluate, "test", "--output", output["first.json"]], 100, cache),
        ("illama-eval", [*evaluate, "test", "--output", output["eval.json"]], None, None),  # fills the cache
        ("illama-eval", [*evaluate, "test", "--output", output["eval.json"], "--overwrite"], 100, output["eval.json"]),
        (
            "illama-export-official",
            [
                "-m",
                "modeling_illama.cli.export_official",
                "--model",
                str(tiny_folder),
                "--output",
                output["official.pth"],
            ],
            2_000,
            output["official.pth"],
        ),
    ]
    image = str(sorted((Path(__file__).parent / "data" / "imagenet-sample").glob("*.JPEG"))[0])
    official = ["-m", "modeling_illama.cli.export_official", "--model", str(tiny_folder), "--output"]
    runs += [
        ("illama-export-official", [*official, str(tmp_path / "official-whole.pth")], None, None),
        (
            "illama-convert",
            [
                "-m",
                "modeling_illama.cli.convert",
                "--checkpoint",
                str(tmp_path / "official-whole.pth"),
                "--output-dir",
                str(tmp_path / "converted"),
                "--num-heads",
                "1",
            ],
            2_000,
            str(tmp_path / ".converted.tmp-"),  # the folder written first, renamed once complete
        ),
        (
            "illama-analyze calibration",
            [
                "-m",
                "modeling_illama.cli.analyze",
                "calibration",
                "--model",
                str(tiny_folder),
                "--dataset",
                str(data),
                "--split",
                "test",
                "--output-dir",
                str(tmp_path / "analysis"),
            ],
            100,
            str(tmp_path / "analysis"),
        ),
        (
            "illama-activation-maps",
            [
                "-m",
                "modeling_illama.cli.activation_maps",
                "--model",
                str(tiny_folder),
                "--image",
                image,
                "--output",
                str(tmp_path / "maps.png"),
            ],
            100,
            str(tmp_path / "maps.png"),
        ),
    ]
    for prog, arguments, limit, named in runs:
        own_cache = str(tmp_path / "train-cache") if prog == "illama-train" else cache  # eval's run fills `cache`
        done = limited_run(arguments, limit, tmp_path, HF_DATASETS_CACHE=own_cache)
        if named is None:
            assert done.returncode == 0, done.stderr[-3000:]
            continue
        lines = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
        assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert named in lines[0] and ("File too large" in lines[0] or "write failed" in lines[0]), lines


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
