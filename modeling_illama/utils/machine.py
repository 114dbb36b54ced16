"""What a measurement ran on, recorded next to its results: the CPU model."""

import platform
import subprocess


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
