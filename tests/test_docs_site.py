"""The documentation site: `mkdocs build --strict` succeeds (a broken link, a page missing from the navigation or an
API object that does not resolve fails it), and the API page documents every public class and function."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "modeling_illama"
NOT_API = ("cli",)  # the console scripts: documented on docs/cli.md
EVALUATE_MODULES = PACKAGE / "training" / "metrics"  # its subfolders are `evaluate` modules, loaded by path


def declared_all(init: Path) -> set[str] | None:
    """A package's `__all__` (its public API: the names its modules define for each other stay internal)."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return {element.value for element in node.value.elts}
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # not --quiet: it hides the warnings that --strict turns into a failure
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return out


def public_objects() -> list[tuple[str, str]]:
    """(module path, name) of every public top-level class and function of the package, outside cli/."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts) or parts[1:2] in [(n,) for n in NOT_API]:
            continue
        if EVALUATE_MODULES in path.parents and path.parent != EVALUATE_MODULES:
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        exported = declared_all(path.parent / "__init__.py") if path.parent != PACKAGE else None
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            if not node.name.startswith("_") and (exported is None or node.name in exported):
                found.append((module, node.name))
    return found


def test_the_site_builds_strictly_and_has_every_page(site):
    pages = {p.stem for p in (REPO / "docs").glob("*.md")}
    for page in pages:
        built = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.is_file(), f"docs/{page}.md was not built (missing from mkdocs.yml's nav?)"


def test_the_api_page_documents_every_public_class_and_function(site):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="(modeling_illama[\w.]*)"', html))
    missing = []
    for module, name in public_objects():
        packages = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)]
        if not any(f"{package}.{name}" in anchors for package in packages):
            missing.append(f"{module}.{name}")
    assert public_objects(), "no public objects found: the package layout changed under this test"
    assert not missing, f"not on docs/api.md (add a `::: module` directive): {missing}"


def test_the_public_object_scan_sees_the_core_classes():
    names = {name for _, name in public_objects()}
    assert {"ILlamaConfig", "ILlamaForImageClassification", "ILlamaBackbone", "load_preset"} <= names
    assert "main" not in {name for module, name in public_objects() if module.startswith("modeling_illama.cli")}


@pytest.mark.parametrize("name", ["docs-site-home.png", "docs-site-api.png"])
def test_the_committed_screenshots_are_browser_renders_of_the_site(name):
    """`make docs-check` (scripts/docs_screenshots.sh) writes them: PNGs of the 1280 x 900 browser window."""
    data = (REPO / "docs" / "images" / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1280, 900)
    script = (REPO / "scripts" / "docs_screenshots.sh").read_text(encoding="utf-8")
    assert name in script and "--window-size=1280,900" in script
    assert (
        "docs-check:" in (REPO / "Makefile").read_text() and "docs_screenshots.sh" in (REPO / "Makefile").read_text()
    )
