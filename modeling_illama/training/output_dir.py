"""A training run's output folder: never written over by accident, used by one run at a time.

`prepare_output_dir` refuses a folder that already holds a model or checkpoints unless the run resumes or was
started with `overwrite=True`; overwriting removes only what a training run writes (weights, config, states,
metrics, logs, checkpoint-* folders, remote code, the model card), never other files. A README.md that is not a
run's model card (`CARD_MARKER`) is refused in every case: the run would write its card over it. `OutputDirLock`
is an exclusive lock (`fcntl.flock` on `<output_dir>/.illama-train.lock`, which names the holder's pid, host and
start time): a second run into the same folder is refused, naming the first. The kernel drops the lock when its
process ends, however it ends, so a lock left by a killed run is taken over, not waited for.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = ".illama-train.lock"
LOG_FILE = "train.log"
# files a training run writes that make a folder "hold a model" (a finished, running or LoRA run)
RUN_MODEL_FILES = (
    "adapter_config.json",
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "trainer_state.json",
    "recipe.json",
)
MODEL_FILES = RUN_MODEL_FILES + ("pytorch_model.bin",)  # also a converted or older model, which a run never writes
# everything a training run (and illama-eval's default output) writes at the top of its output folder: exact
# names, the Trainer's shard names, illama-eval's eval_<split>.json and the remote code save_pretrained copies
MERGED_FOLDER = "merged"  # a LoRA run's merged full model (training/peft.py)
RUN_OUTPUT_PATTERNS = (
    RUN_MODEL_FILES
    + (
        "model-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].safetensors",
        "recipe.resumed-[0-9]*.json",
        "preprocessor_config.json",
        "training_args.bin",
        "all_results.json",
        "train_results.json",
        "eval_results.json",
        "eval_*.json",
        "training_curves.png",
        LOG_FILE,
        "adapter_model.safetensors",  # a LoRA run (training/peft.py)
        "labels.json",
    )
    + tuple(
        sorted(
            path.name
            for path in Path(__file__).resolve().parents[1].glob("*.py")
            if "illama" in path.name or "frozen_llm" in path.name
        )
    )
)
CHECKPOINT_PATTERN = "checkpoint-*"
# the model card a run writes (model_card.py, peft.py): replaced only when this marker says the package wrote it,
# never a README.md of the user's own
CARD_FILE = "README.md"
CARD_MARKER = "<!-- model card written by illama-train: the next training run into this folder replaces it -->"
_OLD_CARD_LINE = " with `illama-train`."  # what every card held before the marker (render_training_card's summary)


def is_run_card(path: str | os.PathLike) -> bool:
    """True when `path` is a model card a training run of this package wrote (its marker, or the front matter and
    summary line of the cards written before the marker existed)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return False
    return CARD_MARKER in text or (text.startswith("---\n") and _OLD_CARD_LINE in text)


def foreign_card_error(output_dir: str | os.PathLike) -> str | None:
    """The refusal when `output_dir` holds a README.md that no training run wrote (a run would replace it with its
    model card; `--overwrite` removes only what a run writes), else None."""
    path = Path(output_dir) / CARD_FILE
    if not os.path.lexists(path) or (path.is_file() and is_run_card(path)):
        return None
    return (
        f"{path} is not a model card written by illama-train and a run writes its card there: move it away or "
        "choose another --output-dir (--overwrite does not replace it)"
    )


class OutputDirError(FileExistsError):
    """The output folder holds a model or checkpoints and the run may not write over them."""


class OutputDirInUseError(RuntimeError):
    """Another run holds the output folder's lock."""


def existing_outputs(output_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(model files, checkpoint folders) already in `output_dir`, sorted."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return [], []
    names = sorted(os.listdir(folder))
    models = [name for name in names if name in MODEL_FILES and (folder / name).is_file()]
    checkpoints = [name for name in names if _is_checkpoint_name(name) and (folder / name).is_dir()]
    return models, checkpoints


def _is_checkpoint_name(name: str) -> bool:
    prefix, _, number = name.rpartition("-")
    return prefix == "checkpoint" and number.isdigit()


def prepare_output_dir(
    output_dir: str | os.PathLike, overwrite: bool = False, resume: bool = False, remove: bool = True
) -> list[str]:
    """Check that a run may write into `output_dir`; with `overwrite` (and `remove`), remove the previous run's
    outputs.

    Returns the names removed. Raises OutputDirError when the folder holds a model or checkpoints and neither
    `resume` nor `overwrite` is given (or when both are). A run validates everything first and passes
    `remove=False` here, then calls `remove_run_outputs` once every check has passed (validate first, delete
    last).
    """
    if overwrite and resume:
        raise OutputDirError("--overwrite and --resume exclude each other: resume continues the run in the folder")
    if error := foreign_card_error(output_dir):
        raise OutputDirError(error)
    models, checkpoints = existing_outputs(output_dir)
    if resume or not (models or checkpoints):
        return []
    if not overwrite:
        found = ", ".join(models + [f"{len(checkpoints)} checkpoint folder(s)"] * bool(checkpoints))
        raise OutputDirError(
            f"{output_dir} already holds a training run or model ({found}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --output-dir"
        )
    return remove_run_outputs(output_dir) if remove else []


# output folder -> size of its train.log when a run claimed it to overwrite it without removing yet: the new run
# appends to that file from then on, so removal drops the old head instead of the file
_LOG_SIZE_AT_CLAIM: dict[str, int] = {}


def remove_run_outputs(output_dir: str | os.PathLike) -> list[str]:
    """Remove what a training run writes (`RUN_OUTPUT_PATTERNS`, checkpoint-* folders) from `output_dir`; every
    other file stays. Returns the names removed. After `claim_output_dir(..., overwrite=True, remove=False)` the
    previous run's lines are cut from train.log, which the new run extends."""
    removed, keep = [], ()
    head = _LOG_SIZE_AT_CLAIM.pop(os.path.realpath(output_dir), None)
    if head is not None:
        keep = (LOG_FILE,)
        log = Path(output_dir) / LOG_FILE
        if head and log.is_file():
            with open(log, "r+b") as handle:  # the run's handler appends (O_APPEND): it follows the new end
                handle.seek(head)
                tail = handle.read()
                handle.seek(0)
                handle.write(tail)
                handle.truncate()
            removed.append(f"{LOG_FILE} (the previous run's {head} bytes)")
    for name in sorted(os.listdir(output_dir)):
        if name in keep:
            continue
        path = Path(output_dir) / name
        if (_is_checkpoint_name(name) or name == MERGED_FOLDER and (path / "config.json").is_file()) and path.is_dir():
            shutil.rmtree(path)
        elif path.is_file() and any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_OUTPUT_PATTERNS):
            path.unlink()
        elif name == CARD_FILE and path.is_file() and is_run_card(path):  # the previous run's card
            path.unlink()
        else:
            continue
        removed.append(name)
    kept = sorted(set(os.listdir(output_dir)) - {LOCK_FILE})
    logger.info("--overwrite: removed the previous run's %s%s", removed, f"; kept {kept}" if kept else "")
    return removed


class OutputDirLock:
    """Exclusive lock on an output folder for the life of a run (a context manager; see the module docstring)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> OutputDirLock:
        import fcntl

        self.output_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputDirInUseError(
                    f"{self.output_dir} is in use by another training run ({holder}); wait for it to finish "
                    "or choose another --output-dir"
                ) from None
            # the holder we waited on may have removed the file between our open() and flock(): retry on the new one
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous != "holder unknown":
            logger.warning("taking over a lock left by a run that ended without releasing it (%s)", previous)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding the lock: a waiter then retries on a new file
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict):
        return "holder unknown"
    return f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}: {record.get('command')}"


def claim_output_dir(
    output_dir: str | os.PathLike, overwrite: bool = False, resume: bool = False, state=None, remove: bool = True
):
    """Lock `output_dir` and check (or, with `overwrite` and `remove`, clear) it for a new run; returns the held
    OutputDirLock.

    With several processes (`state`: accelerate's PartialState) the main process does both and tells the
    others its verdict, so that every process stops on a refusal instead of waiting for the main one.
    """
    lock, error = None, None
    if state is None or state.is_main_process:
        try:
            lock = OutputDirLock(output_dir).acquire()
            prepare_output_dir(output_dir, overwrite=overwrite, resume=resume, remove=remove)
            if overwrite and not remove:
                log = Path(output_dir) / LOG_FILE
                _LOG_SIZE_AT_CLAIM[os.path.realpath(output_dir)] = log.stat().st_size if log.is_file() else 0
        except (OutputDirError, OutputDirInUseError) as caught:
            if lock is not None:
                lock.release()
            error = caught
    if state is not None and state.num_processes > 1:
        import torch.distributed as dist

        verdict = [None if error is None else str(error)]
        dist.broadcast_object_list(verdict, src=0)
        if verdict[0] is not None and error is None:
            error = OutputDirError(verdict[0])
    if error is not None:
        raise error
    return lock
