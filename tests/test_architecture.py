"""The shape of the code, checked on its source with ``ast`` (lazy, function-level imports included;
``if TYPE_CHECKING:`` blocks excluded): the library never imports the examples or a demo package;
``models/`` and ``calib/`` import nothing from the quantizer but ``errors`` and ``modality``; the
packages import one another without cycles. (The method-name rule is tests/methods/test_registry.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = {"masq_jax": ROOT / "masq_jax", "masq_jax.models": ROOT / "models", "masq_jax.calib": ROOT / "calib"}
LOWER = ("masq_jax.models", "masq_jax.calib")  # loaders and calibration data, below the quantizer
LOWER_MAY_IMPORT = LOWER + ("masq_jax.errors", "masq_jax.modality")


def modules() -> dict[str, Path]:
    """Every library module by dotted name (models/ and calib/ as installed: masq_jax.models, masq_jax.calib)."""
    out = {}
    for prefix, root in TREES.items():
        for p in sorted(root.rglob("*.py")):
            rel = p.relative_to(root).with_suffix("").parts
            if prefix == "masq_jax" and rel[0] in ("models", "calib"):
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            out[".".join((prefix, *parts))] = p
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(name: str, path: Path) -> set[str]:
    """The dotted modules ``name`` imports anywhere in its file (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # ``from pkg import module``
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def unit(module: str) -> str:
    """The package a module belongs to: ``masq_jax.X`` (a subpackage or a top-level module)."""
    return ".".join(module.split(".")[:2])


GRAPH = {name: imports(name, path) for name, path in modules().items()}
KNOWN = set(GRAPH)


def test_the_library_never_imports_examples_or_demos():
    bad = sorted(f"{m} -> {i}" for m, deps in GRAPH.items() for i in deps
                 if i.split(".")[0] == "examples" or i.startswith("masq_jax.demos"))
    assert bad == []
    assert not (ROOT / "masq_jax" / "demos").exists()


def test_models_and_calib_import_only_errors_and_modality_from_the_quantizer():
    bad = sorted(f"{m} -> {i}" for m, deps in GRAPH.items() if within(m, LOWER) for i in deps
                 if i in KNOWN and not within(i, LOWER_MAY_IMPORT))
    assert bad == []


def test_no_import_cycles_among_packages():
    edges: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        for i in deps:
            if i in KNOWN and unit(i) != unit(m):
                edges.setdefault(unit(m), set()).add(unit(i))
    cycles, state = [], {}

    def dfs(u, stack):
        state[u] = "open"
        for v in sorted(edges.get(u, ())):
            if state.get(v) == "open":
                cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in state:
                dfs(v, stack + [v])
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            dfs(u, [u])
    assert cycles == []


def test_the_checker_sees_lazy_imports_and_resolves_relative_ones():
    """The rules above would catch what they are for: a function-level import and a relative one."""
    assert "masq_jax.calibrate.batch" in GRAPH["masq_jax.calibrate.evaluate"]  # inside evaluate_artifact
    assert "masq_jax.calib.calibset" in GRAPH["masq_jax.calib.load"]  # ``from .calibset import``
    assert "masq_jax.settings" not in GRAPH["masq_jax.methods.base"]  # under TYPE_CHECKING only
