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


# --- one convention for lazy imports ---------------------------------------------------------------
# Project modules are imported at the top of a module (a cycle is broken by moving code, never by
# hiding an import in a function). A heavy library is imported only by its seam: the modules
# listed here, each importing it inside the function that needs it or at its top where the module
# is about that library; everything else goes through them.
HEAVY_SEAMS: dict[str, tuple[str, ...]] = {
    "mlflow": ("rfau.tracking.registry", "rfau.tracking.served_model"),
    "boto3": ("rfau.storage",),
    "botocore": ("rfau.storage",),
    "kfp": ("components", "pipelines", "rfau.kfp_client"),
    "peft": ("rfau.stages", "rfau.methods.rfau", "rfau.models.families.hf"),
    "sklearn": ("rfau.metrics.evidence", "rfau.metrics.mia", "rfau.data.subpopulation", "rfau.report"),
    "matplotlib": ("rfau.metrics.plots", "rfau.bench.report"),
    "dvc": (),  # only ever run as a command
    # the numeric side of the project; the request store, the ledger, the registry and the CLI's
    # top stay without it (see test_the_light_modules_load_no_heavy_library)
    "torch": (
        "rfau.methods",
        "rfau.metrics",
        "rfau.models",
        "rfau.train",
        "rfau.stages",
        "rfau.bench",
        "rfau.data.base",
        "rfau.data.datasets",
        "rfau.data.text",
        "rfau.data.subpopulation",
        "rfau.config",
        "rfau.devices",
        "rfau.cli.common",
        "rfau.tracking.served_model",
    ),
}
# the packages held to "project modules at the top" (the rest of rfau still imports some lazily)
TOP_IMPORTS_ONLY = ("rfau.batch", "rfau.audit", "rfau.data")


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _lazy_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function or class body; ``if TYPE_CHECKING:`` and
    ``try:`` blocks at the top count as the top."""
    top: set[int] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        top.add(id(node))
        if isinstance(node, ast.If | ast.Try):
            stack += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
            for h in getattr(node, "handlers", []):
                stack += h.body
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and id(node) not in top:
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and id(node) not in top and not node.level:
            out.append((node.lineno, node.module or ""))
    return out


def _all_imports(tree: ast.Module) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.lineno, node.module or ""))
    return out


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: (p, ast.parse(p.read_text(), filename=str(p))) for name, p in files.items()}


def test_project_modules_are_imported_at_the_top():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {mod} inside a function"
        for name, (path, tree) in _sources().items()
        if _in(name, TOP_IMPORTS_ONLY)
        for line, mod in _lazy_imports(tree)
        if mod.split(".")[0] in PACKAGES
    ]
    assert not wrong, "\n".join(wrong)


def test_each_heavy_library_is_imported_only_by_its_seam():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {mod}: only {', '.join(HEAVY_SEAMS[lib]) or 'nothing'} may"
        for name, (path, tree) in _sources().items()
        for line, mod in _all_imports(tree)
        if (lib := mod.split(".")[0]) in HEAVY_SEAMS and not _in(name, HEAVY_SEAMS[lib])
    ]
    assert not wrong, "\n".join(wrong)


def test_the_light_modules_load_no_heavy_library():
    """The CLI's entry point, the request store and the ledger start without torch, MLflow,
    scikit-learn or matplotlib (`rfau request ...` answers in a fraction of a second)."""
    import subprocess
    import sys

    code = (
        "import sys, rfau.cli, rfau.data.request_store, rfau.audit, rfau.audit.ledger; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY_SEAMS)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
