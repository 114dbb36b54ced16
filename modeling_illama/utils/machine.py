"""What a measurement ran on, recorded next to its results: the CPU model, and results files keyed by it."""

import json
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """lscpu's "Model name" (e.g. "Intel(R) Xeon(R) Processor"); the platform's processor name without lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def merge_result(path: Path, key: str, entry: dict) -> dict:
    """Set `key` (a CPU type, a label) to `entry` in the JSON results file at `path`, keeping the other keys;
    returns every result now in the file."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return results
