"""The project's imports: no cycle among its modules, and one convention for lazy imports.

The convention: project modules are imported at the top of a module (a cycle is broken by
moving code, never by hiding an import in a function). A heavy library is imported only by its
seam (HEAVY_SEAMS), lazily inside the function that needs it unless the module is about that
library. A package whose names need a heavy library exports them by PEP 562 (``__getattr__``).

The import graph is read from the source with ``ast`` (nothing is imported), counting every
import, also those inside functions, and every string that names a project module
(``import_module("rfau.x")``, a lazy table's ``"rfau.x:loader"``): a cycle hidden in a function
body or a string still ties the modules together.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# source folder -> the package it installs as (pyproject's package-dir): components/ and pipelines/
# are rfau.components and rfau.pipelines, and the project imports them by those names
PACKAGES = {"rfau": "rfau", "components": "rfau.components", "pipelines": "rfau.pipelines"}


def _module_name(path: Path) -> str:
    folder, *parts = path.relative_to(ROOT).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[folder], *parts])


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _files() -> dict[str, Path]:
    return {_module_name(p): p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py")}


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
    """module -> the project modules importing it runs: those it names, and each package above
    them that it is not inside (importing ``a.b.c`` first runs ``a.b``'s ``__init__``, and with it
    whatever that re-exports: ``rfau.train`` importing ``rfau.models.arch`` runs
    ``rfau.models.checkpoint``)."""
    files = _files()
    graph = {}
    for name, path in files.items():
        deps = set()
        for dep in _imports(path, name, set(files)):
            parts = dep.split(".")
            above = {".".join(parts[:i]) for i in range(1, len(parts))}
            deps |= {dep} | {p for p in above if p in files and not _in(name, (p,))}
        graph[name] = deps
    return graph


def test_graph_sees_the_project():
    graph = import_graph()
    assert {"rfau.batch", "rfau.stages", "rfau.components.evaluate", "rfau.pipelines.run"} <= set(graph)
    assert "rfau.stages" in graph["rfau.batch.evaluation"]
    assert "rfau.components.evaluate" in graph["rfau.pipelines.deletion_batch"]
    assert "rfau.models" in graph["rfau.train"]  # the package rfau.models.arch is in
    assert "rfau.models.checkpoint" in graph["rfau.models"]  # its re-export


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


# --- one convention for lazy imports (the module docstring) ----------------------------------------
HEAVY_SEAMS: dict[str, tuple[str, ...]] = {
    "mlflow": ("rfau.tracking.registry", "rfau.tracking.served_model"),
    "boto3": ("rfau.storage",),
    "botocore": ("rfau.storage",),
    "kfp": ("rfau.components", "rfau.pipelines", "rfau.kfp_client"),
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
# KFP lightweight components: KFP ships a @dsl.component function's body alone (the module around it
# is not there when the task runs), so that body imports what it needs itself; KFP's rule, not ours.
# The rest of a component module (helpers, module level) is held to the convention.
COMPONENTS = "rfau.components"
# the in-function project imports left, each with its reason: (module, imported) -> why
LAZY_PROJECT_IMPORTS = {
    ("rfau.params", "rfau.stages"): "check_method validates method settings against the method "
    "table, which imports torch; rfau.pipelines.run imports rfau.params and starts without torch "
    "(test_the_pipeline_driver_loads_no_torch)",
    ("rfau.pipelines.container", "rfau.errors"): "the file is also a standard-library-only script "
    "(`python3 pipelines/container.py flags`, run by the Makefile before any set-up), where rfau "
    "cannot be imported",
}


def _is_component(fn: ast.AST) -> bool:
    """A function decorated ``@dsl.component`` or ``@dsl.component(...)``."""
    return isinstance(fn, ast.FunctionDef) and any(
        isinstance(d := (dec.func if isinstance(dec, ast.Call) else dec), ast.Attribute)
        and d.attr == "component"
        for dec in fn.decorator_list
    )


def _top_level(tree: ast.Module) -> set[int]:
    """The nodes at a module's top: its statements, and those in its ``if`` and ``try`` blocks."""
    top: set[int] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        top.add(id(node))
        if isinstance(node, ast.If | ast.Try):
            stack += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
            for h in getattr(node, "handlers", []):
                stack += h.body
    return top


def _lazy_imports(tree: ast.Module, skip_components: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function or class body; ``if TYPE_CHECKING:`` and
    ``try:`` blocks at the top count as the top. ``skip_components``: not those in the body of a
    KFP component."""
    top = _top_level(tree)
    shipped = (
        {id(n) for fn in tree.body if _is_component(fn) for n in ast.walk(fn)} if skip_components else set()
    )
    out = []
    for node in ast.walk(tree):
        if id(node) in top or id(node) in shipped:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.lineno, node.module or ""))
    return out


def _type_only_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of the imports in a top-level ``if TYPE_CHECKING:`` block."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            out += [(line, mod) for line, mod in _all_imports(ast.Module(body=node.body, type_ignores=[]))]
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
    return {name: (p, ast.parse(p.read_text(), filename=str(p))) for name, p in _files().items()}


def _seams_of(name: str) -> set[str]:
    return {lib for lib, seams in HEAVY_SEAMS.items() if _in(name, seams)}


def test_project_modules_are_imported_at_the_top():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {mod} inside a function"
        for name, (path, tree) in _sources().items()
        for line, mod in _lazy_imports(tree, skip_components=_in(name, (COMPONENTS,)))
        if mod.split(".")[0] == "rfau" and (name, mod) not in LAZY_PROJECT_IMPORTS
    ]
    assert not wrong, "\n".join(wrong)


def test_the_exceptions_are_still_needed():
    lazy = {(name, mod) for name, (_, tree) in _sources().items() for _, mod in _lazy_imports(tree)}
    assert set(LAZY_PROJECT_IMPORTS) <= lazy, set(LAZY_PROJECT_IMPORTS) - lazy


def test_a_type_only_import_of_a_project_module_keeps_a_heavy_library_out():
    """``if TYPE_CHECKING:`` names a project module only where importing it would load a heavy
    library (it is that library's seam) this module is no seam of: e.g. ``rfau.data.split``
    annotating with ``rfau.data.base.Dataset`` (torch). Anything else is imported at the top."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {mod} for type checking only: import it at the top"
        for name, (path, tree) in _sources().items()
        for line, mod in _type_only_imports(tree)
        if mod.split(".")[0] == "rfau" and not (_seams_of(mod) - _seams_of(name))
    ]
    assert not wrong, "\n".join(wrong)


def test_lazy_loading_by_name_is_pep_562_or_the_data_sources_table():
    """``__getattr__`` at module level only in a package's ``__init__`` (PEP 562, made by
    rfau.lazy); ``import_module`` only there, in rfau.lazy, in the data sources' one table
    (rfau.data.datasets.OTHER_SOURCES), and where a heavy library is named by a class (a method's
    ``libraries``, a vision family's ``library``)."""
    by_name = ("rfau.lazy", "rfau.data.datasets", "rfau.methods.runner", "rfau.models.families.vision")
    wrong = []
    for name, (path, tree) in _sources().items():
        package = path.name == "__init__.py"
        if not package and any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
            wrong.append(f"{path.relative_to(ROOT)}: module __getattr__ outside a package's __init__")
        calls = any(
            isinstance(n, ast.Call)
            and (n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", ""))
            == "import_module"
            for n in ast.walk(tree)
        )
        if calls and not package and name not in by_name:
            wrong.append(f"{path.relative_to(ROOT)}: import_module outside PEP 562 and the sources table")
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


def test_the_pipeline_driver_loads_no_torch():
    """`rfau pipeline compile|submit|schedule` and a local run's driver import rfau.pipelines.run,
    rfau.params and rfau.batch (whose names load on first use, PEP 562) without torch."""
    import subprocess
    import sys

    code = (
        "import sys, rfau.pipelines.run, rfau.params, rfau.batch; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn', 'mlflow'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
