"""Run a script as on a machine without this package: its import system refuses `modeling_illama`, so a saved
folder can only load through its own remote code."""

import os
import subprocess
import sys
import textwrap

BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_illama":
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, BlockPackage())  # before the editable-install finder
    """
)


def run_without_package(script: str, args, tmp_path) -> subprocess.CompletedProcess:
    """`script` (after the import block) run from `tmp_path` with `args`, offline, with its own module cache."""
    (tmp_path / "remote.py").write_text(BLOCK_PACKAGE + script)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), *map(str, args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
