"""The package's layers (docs/DESIGN.md, "Layers"): every import of `modeling_illama`, module-level or inside a
function, read with `ast`, goes to the same or a lower layer, and no two modules import each other through any
chain. The checker is tested on made-up packages too, so that it cannot pass by finding nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "modeling_illama"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# lowest first; a module may import its own layer and the ones below it
LAYERS = ("utils", "config", "model", "llm, conversion", "training", "analysis", "cli")
SUBPACKAGE_LAYERS = {
    "utils": "utils",
    "configuration": "config",
    "llm": "llm, conversion",
    "conversion": "llm, conversion",
    "training": "training",
    "analysis": "analysis",
    "cli": "cli",
}
MAX_FUNCTION_LINES = 60  # in training/: no function a reader must hold in mind is longer
# docs/DESIGN.md "Attention": the attention functions, their table and ILlamaAttention (modeling_illama.py) plus
# fused_attention_illama.py, at most half of the ~550 lines the attention took over 13 paths; the model file
MAX_ATTENTION_LINES = 275
MAX_MODEL_FILE_LINES = 610
ATTENTION_NAMES = ("eager_attention_forward", "sdpa_attention_forward", "ILlamaAttentionInterface", "ILlamaAttention")


def layer_of(module: str) -> str:
    """The layer of a module of the package: its subpackage's, else configuration_*.py -> config and every other
    file of the package root (modeling_*.py, image processing, presets, labels, loading, ...) -> model."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{module} is not a module of {PACKAGE}")
    if len(parts) == 1:
        return "model"  # the package's __init__: public names of the model layer
    if len(parts) > 2 or parts[1] in SUBPACKAGE_LAYERS:
        if parts[1] not in SUBPACKAGE_LAYERS:
            raise ValueError(f"{module}: subpackage {parts[1]!r} has no layer; add it to SUBPACKAGE_LAYERS")
        return SUBPACKAGE_LAYERS[parts[1]]
    return "config" if parts[1].startswith("configuration_") else "model"


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of every .py file under the package folder `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, set[str]]:
    """{imported module of the package: the names imported from it} for every import statement in `path`,
    wherever it is (module level, function, class, `if` block). `from pkg import sub` counts as importing the
    module `pkg.sub` when that is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:
                    found.setdefault(submodule, set())
                else:
                    found.setdefault(target, set()).add(alias.name)
    return found


def import_graph(root: Path) -> dict[str, dict[str, set[str]]]:
    """{module: {imported module: names}} of the package folder `root` (imports of a module by itself dropped)."""
    modules = module_files(root)
    graph = {}
    for module, path in modules.items():
        edges = imports_of(module, path, modules)
        graph[module] = {target: names for target, names in edges.items() if target != module}
    return graph


def upward_imports(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """'a (layer) -> b (layer)' for every import of a higher layer."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    found = []
    for module, edges in sorted(graph.items()):
        for target in sorted(edges):
            if rank[layer_of(target)] > rank[layer_of(module)]:
                found.append(f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})")
    return found


def import_cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """The groups of two or more modules that reach each other through imports (Tarjan's strongly connected
    components), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def private_imports(graph: dict[str, dict[str, set[str]]], importers: tuple[str, ...]) -> list[str]:
    """'a -> b._name' for every `_name` that a module of the layers `importers` imports from another module."""
    return [
        f"{module} -> {target}.{name}"
        for module, edges in sorted(graph.items())
        if layer_of(module) in importers
        for target, names in sorted(edges.items())
        for name in sorted(names)
        if name.startswith("_") and not name.startswith("__")
    ]


def long_functions(folder: Path, limit: int) -> list[str]:
    """'file:function (n lines)' for every function or method under `folder` longer than `limit` lines."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{node.name} ({length} lines)")
    return found


# ----------------------------------------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_every_module_has_a_layer_and_the_graph_is_read(graph):
    layers = {module: layer_of(module) for module in graph}
    assert set(layers.values()) == set(LAYERS)
    # the reader sees module-level, relative and function-level imports (spot checks on known imports)
    assert "modeling_illama.configuration_illama" in graph["modeling_illama.modeling_illama"]
    assert "modeling_illama.training.data" in graph["modeling_illama.analysis.loading"]  # inside a function
    assert "modeling_illama.training.run" in graph["modeling_illama.cli.train"]


def test_no_import_goes_up_a_layer(graph):
    assert upward_imports(graph) == []


def test_no_import_cycle(graph):
    assert import_cycles(graph) == []


def test_no_private_name_is_imported_across_modules_of_the_training_and_analysis_layers(graph):
    assert private_imports(graph, ("llm, conversion", "training", "analysis")) == []


def test_no_training_function_runs_past_60_lines():
    assert long_functions(ROOT / "training", MAX_FUNCTION_LINES) == []


def attention_lines(model_file: Path, fused_file: Path) -> int:
    """Lines from the first to the last attention definition of the model file (blank lines and the table
    between them included) plus every line of the fused attention file."""
    nodes = [
        node
        for node in ast.parse(model_file.read_text(encoding="utf-8")).body
        if getattr(node, "name", None) in ATTENTION_NAMES
        or any(getattr(target, "id", None) == "ALL_ATTENTION_FUNCTIONS" for target in getattr(node, "targets", ()))
    ]
    assert len(nodes) == len(ATTENTION_NAMES) + 1, [getattr(node, "name", "table") for node in nodes]
    in_model = max(node.end_lineno for node in nodes) - min(node.lineno for node in nodes) + 1
    return in_model + len(fused_file.read_text(encoding="utf-8").splitlines())


def test_attention_and_the_model_file_stay_reviewable():
    model_file = ROOT / "modeling_illama.py"
    assert attention_lines(model_file, ROOT / "fused_attention_illama.py") <= MAX_ATTENTION_LINES
    assert len(model_file.read_text(encoding="utf-8").splitlines()) <= MAX_MODEL_FILE_LINES


# ----------------------------------------------------------------------------------------------- the checker


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / PACKAGE
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return package


LAYERED = {
    "configuration_illama.py": "import torch\n",
    "modeling_illama.py": "from .configuration_illama import ILlamaConfig\n",
    "training/trainer.py": "from ..modeling_illama import Model\nfrom . import data\n",
    "training/data.py": "def load():\n    from modeling_illama.configuration_illama import ILlamaConfig\n",
    "analysis/quantization.py": "from ..training.trainer import Trainer\n",
}


def test_checker_passes_a_layered_package(tmp_path):
    graph = import_graph(write_package(tmp_path, LAYERED))
    assert graph["modeling_illama.training.trainer"].keys() == {
        "modeling_illama.modeling_illama",
        "modeling_illama.training.data",
    }
    assert upward_imports(graph) == [] and import_cycles(graph) == []


def test_checker_finds_an_added_upward_import_also_inside_a_function(tmp_path):
    files = dict(LAYERED)
    files["training/trainer.py"] += "def qat():\n    from ..analysis.quantization import prepare_qat\n"
    graph = import_graph(write_package(tmp_path, files))
    assert upward_imports(graph) == [
        "modeling_illama.training.trainer (training) -> modeling_illama.analysis.quantization (analysis)"
    ]


def test_checker_finds_an_added_cycle_within_a_layer(tmp_path):
    files = dict(LAYERED)
    files["training/segmentation.py"] = "from .trainer import StepLogCallback\n"
    files["training/trainer.py"] += "def build():\n    from . import segmentation\n"
    graph = import_graph(write_package(tmp_path, files))
    assert upward_imports(graph) == []
    assert import_cycles(graph) == [["modeling_illama.training.segmentation", "modeling_illama.training.trainer"]]


def test_checker_finds_a_cycle_through_three_modules_and_a_private_import():
    graph = {
        "modeling_illama.modeling_a": {"modeling_illama.modeling_b": {"B"}},
        "modeling_illama.modeling_b": {"modeling_illama.labels": {"names"}},
        "modeling_illama.labels": {"modeling_illama.modeling_a": {"A"}},
        "modeling_illama.training.vit": {"modeling_illama.training.trainer": {"_log_head"}},
        "modeling_illama.training.trainer": {},
    }
    assert import_cycles(graph) == [
        ["modeling_illama.labels", "modeling_illama.modeling_a", "modeling_illama.modeling_b"]
    ]
    assert private_imports(graph, ("training",)) == [
        "modeling_illama.training.vit -> modeling_illama.training.trainer._log_head"
    ]


def test_layer_of_places_the_model_root_files():
    assert [
        layer_of(f"{PACKAGE}.{name}")
        for name in ("configuration_illama", "modeling_frozen_llm", "presets", "labels", "utils.figures", "llm.frozen")
    ] == ["config", "model", "model", "model", "utils", "llm, conversion"]
    with pytest.raises(ValueError, match="subpackage 'plugins' has no layer"):
        layer_of(f"{PACKAGE}.plugins.extra")


def test_attention_line_count_spans_the_definitions_and_the_fused_file(tmp_path):
    functions = "".join(f"def {name}():\n    pass\n\n\n" for name in ATTENTION_NAMES[:3])
    model = tmp_path / "model.py"
    model.write_text(
        f"import torch\n\n\n{functions}ALL_ATTENTION_FUNCTIONS = {{}}\n\n\nclass ILlamaAttention:\n    x = 1\n"
    )
    fused = tmp_path / "fused.py"
    fused.write_text("a = 1\nb = 2\n")
    assert attention_lines(model, fused) == 3 * 4 + 1 + 2 + 2 + 2  # functions, table, blanks, class, fused
    model.write_text("def eager_attention_forward():\n    pass\n")
    with pytest.raises(AssertionError):
        attention_lines(model, fused)


def test_long_function_check_counts_lines(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "glue.py").write_text(f"def long():\n{body}\n\ndef short():\n    return 1\n")
    assert long_functions(tmp_path / "training", MAX_FUNCTION_LINES) == ["training/glue.py:long (61 lines)"]
