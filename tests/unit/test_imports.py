"""No import cycle among the project's modules (rfau, components, pipelines).

The graph is read from the source with ``ast`` (nothing is imported), counting every import, also
those inside functions, and every string that names a project module (``import_module("rfau.x")``,
a lazy table's ``"rfau.x:loader"``): a cycle hidden in a function body or a string still ties the
modules together.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rfau", "components", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The project modules that ``path`` imports (``from a.b import c`` counts ``a.b.c`` if a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value.partition(":")[0])  # a lazy import by name
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports. A package's ``__init__`` importing its own
    submodules is left out: that is a re-export, and every submodule import passes through it."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {
        name: {dep for dep in _imports(path, name, set(files)) if not dep.startswith(name + ".")}
        for name, path in files.items()
    }


def test_graph_sees_the_project():
    graph = import_graph()
    assert {"rfau.batch", "rfau.stages", "components.evaluate", "pipelines.run"} <= set(graph)
    assert "rfau.stages" in graph["rfau.batch.evaluation"]


def test_no_import_cycle():
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None


def test_the_stages_that_do_not_evaluate_load_no_scikit_learn():
    """Every pipeline task, `rfau batch` and `rfau pipeline run` process imports rfau.batch and
    rfau.stages, and most load the digits; scikit-learn (2-3 s at start) is only for the
    evaluation's metrics, which import it themselves (the test suite starts dozens of such
    processes)."""
    import subprocess
    import sys

    code = (
        "import sys, rfau.batch, rfau.stages, rfau.job, rfau.pipelines.run, rfau.tracking.registry; "
        "from rfau.data import load_dataset; load_dataset('digits'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    # and the names rfau.metrics re-exports still resolve, loading it then
    from rfau.metrics import EVIDENCE_KEYS, RelearnConfig, mia_efficacy

    assert EVIDENCE_KEYS and RelearnConfig().model_dump() and callable(mia_efficacy)
