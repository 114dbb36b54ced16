"""Real training processes: DDP over gloo with `accelerate launch --cpu --num_processes 2`, and a run killed
after a checkpoint then continued with `--resume` (same step, same soft-mask rate, same schedule)."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_data import TINY_MODEL_OVERRIDES, tiny_recipe_fields, write_tiny_image_splits

REPO = Path(__file__).resolve().parents[1]


def write_recipe(path: Path, **changes) -> Path:
    fields = tiny_recipe_fields(TINY_MODEL_OVERRIDES, **{"eval_strategy": "no", **changes})
    path.write_text(yaml.safe_dump(fields))
    return path


def train_script(recipe: Path, data: Path, out: Path) -> list[str]:
    """scripts/train.py with a recipe file, a data folder and an output folder, as command-line words."""
    return [
        str(REPO / "scripts" / "train.py"),
        "--recipe",
        str(recipe),
        "--dataset",
        str(data),
        "--output-dir",
        str(out),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment():
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU DDP over gloo even on a GPU machine
    return env


def test_ddp_two_cpu_processes(tmp_path):
    data = write_tiny_image_splits(tmp_path / "data")
    recipe = write_recipe(tmp_path / "recipe.yaml", eval_strategy="epoch")
    out = tmp_path / "out"
    # accelerate 1.x spawns ONE process for `--cpu --num_processes 2` (it needs mpirun for several CPU processes);
    # `--multi_gpu` spawns two through torchrun and, without a GPU, the package picks gloo on the CPU.
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
        *train_script(recipe, data, out),
    ]
    result = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # 24 images / (4 per process x 2 processes) = 3 optimizer steps per epoch, 2 epochs
    assert "[rank 0/2] finished at optimizer step 6" in result.stdout
    assert "[rank 1/2] finished at optimizer step 6" in result.stdout
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert [e["soft_mask_rate"] for e in state["log_history"] if "loss" in e] == pytest.approx(
        [1.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    )
    assert any("eval_top1" in e for e in state["log_history"])
    assert (out / "model.safetensors").is_file() and (out / "train.log").is_file()
    assert json.loads((out / "config.json").read_text())["soft_mask_rate"] == 0.0


def test_killed_run_resumes_with_the_same_step_rate_and_schedule(tmp_path):
    data = write_tiny_image_splits(tmp_path / "data", n_train=24)
    # 6 steps per epoch x 8 epochs = 48 steps; soft mask linear over 4 epochs = 24 steps; warmup 6 steps
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        num_train_epochs=8,
        global_batch_size=4,
        soft_mask_cutoff_epochs=4,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=2,
    )
    out = tmp_path / "out"
    command = [sys.executable, *train_script(recipe, data, out), "--no-plot"]
    first = subprocess.Popen(
        command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 180
    try:

        def saved_past_step_4():  # checkpoint-4 itself may already be rotated out (save_total_limit=2)
            folders = list(out.glob("checkpoint-*"))
            return any(int(f.name.rsplit("-", 1)[1]) >= 4 and (f / "trainer_state.json").exists() for f in folders)

        while not saved_past_step_4():
            assert first.poll() is None, (
                "training ended before it could be killed: " + first.stderr.read().decode()[-2000:]
            )
            assert time.time() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (out / "model.safetensors").exists(), "the first run finished before the kill"
    from transformers.trainer_utils import get_last_checkpoint

    killed_at = int(get_last_checkpoint(str(out)).rsplit("-", 1)[1])
    assert 4 <= killed_at < 48

    resumed = subprocess.run(command + ["--resume"], env=environment(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "resuming from" in log
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 48
    steps = {e["step"]: e for e in state["log_history"] if "loss" in e}
    # the resumed run's history starts from the checkpoint's and continues at the next step
    assert sorted(steps) == list(range(1, 49))
    for step, entry in steps.items():
        i = step - 1  # the rate and lr logged at `step` were used for optimizer step i
        rate = 1.0 - i / 23 if i < 24 else 0.0  # numpy.linspace(1, 0, 24) then 0
        assert entry["soft_mask_rate"] == pytest.approx(rate, abs=1e-9), step
        lr = 1e-3 * i / 6 if i < 6 else 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * (i - 6) / 42))
        assert entry["learning_rate"] == pytest.approx(lr, rel=1e-6), step
        assert math.isfinite(entry["loss"])
    stored = json.loads((out / "checkpoint-48" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert stored["SoftMaskCallback"]["args"] == {"schedule": "linear", "cutoff_steps": 24}
    assert json.loads((out / "config.json").read_text())["soft_mask_rate"] == 0.0
