"""The import rules of packages/pytc-core/README.md, checked on the source (ast, every import
including function-local ones): pytc_core's layers import only downward, no package has an
import cycle, and no module imports another module's private name."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2]

#: every pytc_core module's layer (a subpackage's entry covers its modules). A new module
#: goes into the layer of what it does (see packages/pytc-core/README.md).
LAYERS = {
    "pytc_core": "api",                 # the package's re-exports: may import any layer
    "pytc_core.errors": "io",
    "pytc_core.bbox": "io",
    "pytc_core.files": "io",
    "pytc_core.lazy": "io",
    "pytc_core.version": "io",
    "pytc_core.serve": "io",
    "pytc_core.timing": "io",
    "pytc_core.memory": "io",
    "pytc_core.volume": "io",           # and each format module
    "pytc_core.volume.file_lock": "io",
    "pytc_core.targets": "arrays",
    "pytc_core.synthetic": "arrays",
    "pytc_core.baselines": "arrays",
    "pytc_core.normalize": "arrays",
    "pytc_core.contract": "arrays",
    "pytc_core.config": "config",
    "pytc_core.lease": "runs",
    "pytc_core.output": "runs",
    "pytc_core.output_run": "runs",
    "pytc_core.blocks": "runs",
    "pytc_core.merge_history": "runs",
    "pytc_core.cli": "cli",
    "pytc_core.models": "models",
}
#: the layers each layer may import (its own and those below it)
MAY_IMPORT = {
    "io": {"io"},
    "arrays": {"io", "arrays"},
    "config": {"io", "config"},
    "runs": {"io", "config", "runs"},
    "cli": {"io", "config", "runs", "cli"},
    "models": {"io", "config", "models"},
    "api": {"io", "arrays", "config", "runs"},
}


@dataclass(frozen=True)
class Import:
    """One import statement's target module in a module of ours."""

    module: str          # the importing module
    target: str          # the imported module (ours)
    names: tuple[str, ...]  # the names taken from it (``from target import a, b``)
    line: int
    local: bool          # inside a function
    type_only: bool      # inside ``if TYPE_CHECKING:``


def _modules() -> dict[str, Path]:
    found = {}
    for src in sorted(PACKAGES.glob("*/src")):
        for path in src.rglob("*.py"):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))

    def visit(node: ast.AST, local: bool, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in MODULES:
                        yield Import(module, alias.name, (), child.lineno, local, type_only)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the importing module's package
                    package = module.split(".") if path.name == "__init__.py" else \
                        module.split(".")[:-1]
                    package = package[:len(package) - (child.level - 1)]
                    base = ".".join([*package, base] if base else package)
                names = tuple(a.name for a in child.names)
                submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
                rest = tuple(n for n in names if f"{base}.{n}" not in MODULES)
                if base in MODULES and rest:
                    yield Import(module, base, rest, child.lineno, local, type_only)
                for sub in submodules:
                    yield Import(module, sub, (), child.lineno, local, type_only)
            else:
                inner_local = local or isinstance(child, (ast.FunctionDef,
                                                          ast.AsyncFunctionDef, ast.Lambda))
                inner_type = type_only or (isinstance(child, ast.If)
                                           and "TYPE_CHECKING" in ast.unparse(child.test))
                yield from visit(child, inner_local, inner_type)

    yield from visit(tree, False, False)


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _layer(module: str) -> str | None:
    """The layer of ``module`` or of the nearest package above it that has one; a module
    directly in ``pytc_core`` needs its own entry (the package's ``api`` does not cover it)."""
    if module == "pytc_core":
        return LAYERS[module]
    while module != "pytc_core":
        if module in LAYERS:
            return LAYERS[module]
        module = module.rpartition(".")[0]
    return None


def test_every_core_module_has_a_layer():
    unplaced = [m for m in MODULES if m.startswith("pytc_core") and _layer(m) is None]
    assert unplaced == [], (f"add {unplaced} to LAYERS in {__file__} (and to the table in "
                            "packages/pytc-core/README.md)")


def test_core_layers_import_only_downward():
    wrong = [f"{i.module} ({_layer(i.module)}) imports {i.target} ({_layer(i.target)}), "
             f"line {i.line}" for i in IMPORTS
             if i.module.startswith("pytc_core") and i.target.startswith("pytc_core")
             and _layer(i.target) not in MAY_IMPORT[_layer(i.module) or "io"]]
    assert wrong == []


def _cycles(package: str) -> list[list[str]]:
    """The import cycles (strongly connected components) among the modules of ``package``,
    from every import a running program executes (``TYPE_CHECKING`` blocks do not run)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES if m.split(".")[0] == package}
    for imp in IMPORTS:
        if imp.module in graph and imp.target in graph and imp.target != imp.module \
                and not imp.type_only:
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


@pytest.mark.parametrize("package", sorted({m.split(".")[0] for m in MODULES}))
def test_no_import_cycle(package):
    assert _cycles(package) == []


def _private_imports() -> list[tuple[str, str]]:
    """``(importing module, "target._name line N")`` for every private name taken from
    another of our modules: ``from pytc_x.y import _name`` or ``y._name`` after ``import``."""
    found = []
    for imp in IMPORTS:
        if imp.target == imp.module:
            continue
        for name in imp.names:
            if name.startswith("_") and not name.startswith("__"):
                found.append((imp.module, f"{imp.target}.{name} line {imp.line}"))
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> one of our modules
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__") and aliases[node.value.id] != module):
                found.append((module, f"{aliases[node.value.id]}.{node.attr} line {node.lineno}"))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "getattr" and len(node.args) >= 2
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases
                    and isinstance(node.args[1], ast.Constant)
                    and str(node.args[1].value).startswith("_")):
                found.append((module, f"{aliases[node.args[0].id]}.{node.args[1].value} "
                                      f"line {node.lineno}"))
    return found


def test_no_module_imports_another_modules_private_name():
    wrong = [f"{m} takes {what}" for m, what in _private_imports()
             if not m.startswith("pytc_decode")]
    assert wrong == []


def test_pytc_decode_imports_no_private_name():
    assert [f"{m} takes {what}" for m, what in _private_imports()
            if m.startswith("pytc_decode")] == []


def _comment_near(path: Path, line: int) -> bool:
    lines = path.read_text().splitlines()
    here, above = lines[line - 1], lines[line - 2].strip() if line >= 2 else ""
    return "#" in here or above.startswith("#")


def test_core_function_local_imports_say_why():
    """A function-local import in pytc_core keeps ``--help`` fast or a heavy library out of
    the import (torch, CloudVolume, h5py, ...): the line, or the one above it, says which."""
    silent = [f"{MODULES[i.module].relative_to(PACKAGES)}:{i.line}" for i in IMPORTS
              if i.module.startswith("pytc_core") and i.local
              and not _comment_near(MODULES[i.module], i.line)]
    silent += [f"{path.relative_to(PACKAGES)}:{line}" for path, line in _third_party_locals()]
    assert sorted(set(silent)) == []


def _third_party_locals() -> Iterator[tuple[Path, int]]:
    for module, path in MODULES.items():
        if not module.startswith("pytc_core"):
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) \
                            and not _comment_near(path, node.lineno):
                        yield path, node.lineno


def test_stages_open_their_inputs_through_the_run_policy():
    """A stage opens a volume it reads with ``pytc_core.open_volume`` (or ``open_input``),
    which refuses an unfinished pytc output; ``pytc_core.volume.open_volume`` is I/O only."""
    wrong = [f"{i.module} line {i.line}" for i in IMPORTS
             if not i.module.startswith("pytc_core") and i.target == "pytc_core.volume"
             and "open_volume" in i.names]
    assert wrong == []


def test_stages_name_their_command_line_in_every_claim():
    """``claim_output(..., command=current_command())``: the run record names the command
    that resumes the output (the runs layer reads no global for it)."""
    wrong = []
    for module, path in MODULES.items():
        if module.startswith("pytc_core"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "claim_output" \
                    and not any(k.arg == "command" for k in node.keywords):
                wrong.append(f"{module} line {node.lineno}")
    assert wrong == []
