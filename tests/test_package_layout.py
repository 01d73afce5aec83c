"""The package's layout, checked statically with `ast`: one test file for every rule.

(a) No module imports a private name (``from X import _name``) from another module.
    Private *modules* (``from . import _migrate``) are fine: the underscore says "not for
    users", not "not for the package".
(b) No import cycle among ``src/skybutler`` modules, counting function-level imports
    and leaving out those under ``if TYPE_CHECKING:``.
(c) No module over 600 lines outside ``demo/``.
(d) No module imports the package root ``skybutler`` (the root imports every layer).
(e) ``ops`` depends on nothing in ``demo``; every ingest plugin lives in ``ops``.
(f) The cyclic garbage collector is paused in one place (`skybutler._gc.paused_gc`).

What broke a rule when it was introduced is listed as a known exception, so a test fails
on any new offence; an entry that is mended must be removed (the tests say so).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from skybutler.ops import plugins

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "skybutler"
MAX_LINES = 600

# Cycles found when the rule was introduced, each as its sorted modules.
KNOWN_CYCLES: set[tuple[str, ...]] = set()

# Private names imported across modules when the rule was introduced, as "module: name".
KNOWN_PRIVATE_IMPORTS: set[str] = set()

# Modules over MAX_LINES when the rule was introduced (to be split by their owners).
KNOWN_LONG: set[str] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name a ``from ... import`` names (its level resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(module: str, source: str | None = None) -> Iterator[tuple[str, list[str], int]]:
    """``(target module, imported names, line)`` for each runtime import of ``module`` (or of ``source``)."""
    tree = ast.parse(MODULES[module].read_text() if source is None else source)
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield _resolve(module, node), [a.name for a in node.names], node.lineno


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, names, _ in _imports(module):
            submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULES]
            graph[module].update(submodules)
            # ``from . import schema`` inside a package needs the submodule, not the package's
            # __init__ (already being imported); any other name is the __init__'s.
            if target in MODULES and (not names or len(submodules) < len(names)):
                graph[module].add(target)
        graph[module].discard(module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_another_modules_private_names():
    offences = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if not target.startswith("skybutler"):
                continue
            for name in names:
                private = name.startswith("_") and not name.startswith("__")
                if private and f"{target}.{name}" not in MODULES and f"{module}: {name}" not in KNOWN_PRIVATE_IMPORTS:
                    offences.append(f"{MODULES[module].relative_to(PACKAGE)}:{line} imports {name} from {target}")
    assert not offences, "private names imported across modules:\n" + "\n".join(offences)


def test_no_import_cycles():
    cycles = set(_cycles(_graph()))
    new = sorted(cycles - KNOWN_CYCLES)
    assert not new, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in new)
    mended = sorted(KNOWN_CYCLES - cycles)
    assert not mended, f"known cycles that are gone (remove them from KNOWN_CYCLES): {mended}"


def test_no_module_over_600_lines_outside_demo():
    long = {str(path.relative_to(PACKAGE)): n for path in MODULES.values()
            if "demo" not in path.relative_to(PACKAGE).parts
            and (n := len(path.read_text().splitlines())) > MAX_LINES}
    new = {p: n for p, n in long.items() if p not in KNOWN_LONG}
    assert not new, f"modules over {MAX_LINES} lines: {new}"
    mended = sorted(KNOWN_LONG - set(long))
    assert not mended, f"known long modules that are short now (remove them from KNOWN_LONG): {mended}"


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    """The graph code finds a planted cycle (so an empty result means something)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [("a", "b", "c")]
    node = ast.parse("from ..errors import _private").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("skybutler.registry.queries", node) == "skybutler.errors"


def test_function_level_imports_count_and_type_checking_ones_do_not():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ._registry import Registry\n"
        "def f():\n"
        "    from .queries import refs_from_rows\n"
    )
    found = sorted((target, names) for target, names, _ in _imports("skybutler.registry.search", source))
    assert found == [("skybutler.registry.queries", ["refs_from_rows"]), ("typing", ["TYPE_CHECKING"])]

# Alembic loads migration scripts by file path, outside the package: they must import absolutely.
ABSOLUTE_IMPORTS_ALLOWED = ("registry/migrations/",)

# Found when rule (a) was introduced; owned by the registry split (issue 10, item 1).
KNOWN_ROOT_IMPORTS: set[str] = set()

# Found when rule (c) was introduced: the registry's own copy of the helper, to replace by `paused_gc`.
KNOWN_GC_PAUSES: set[str] = set()


def _trees() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _package_of(rel: str, level: int) -> list[str]:
    """The package a relative import of ``level`` dots in module ``rel`` names, as path parts."""
    parts = rel.removesuffix(".py").split("/")[:-1]  # the module's own package
    return parts[: len(parts) - (level - 1)] if level > 1 else parts


def _imports_root(rel: str, node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "skybutler" for alias in node.names)
    if not isinstance(node, ast.ImportFrom):
        return False
    if node.level == 0:
        return (node.module or "").split(".")[0] == "skybutler"
    if node.module is not None or _package_of(rel, node.level):
        return False
    # ``from .. import name`` at the root: fine for a submodule, not for a name the root defines.
    return any(not (PACKAGE / alias.name).is_dir() and not (PACKAGE / f"{alias.name}.py").is_file()
               for alias in node.names)


def test_no_module_imports_the_package_root():
    offenders = {rel for rel, tree in _trees() if not rel.startswith(ABSOLUTE_IMPORTS_ALLOWED)
                 and any(_imports_root(rel, node) for node in ast.walk(tree))}
    assert offenders - KNOWN_ROOT_IMPORTS == set(), "import from the layer's module, relatively"
    assert _imports_root("pipeline/builder.py", ast.parse("from .. import __version__").body[0])
    assert not _imports_root("pipeline/builder.py", ast.parse("from .._version import __version__").body[0])
    assert not _imports_root("cli/x.py", ast.parse("from .. import errors").body[0])


def test_ops_does_not_depend_on_the_demo():
    for rel, tree in _trees():
        if not rel.startswith("ops/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = "/".join(_package_of(rel, node.level)) + "/" + (node.module or "").replace(".", "/") \
                    if node.level else (node.module or "").replace(".", "/")
                assert "demo" not in target.split("/"), f"{rel} imports {target}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "demo" not in node.value.split(":")[0].split("."), f"{rel} names {node.value!r}"


def test_every_ingest_plugin_lives_in_ops_and_loads():
    from skybutler.ops.hsc import HscRawPlugin

    assert plugins.BUILTIN_PLUGINS and all(target.startswith(".") for target in plugins.BUILTIN_PLUGINS.values())
    for name in plugins.BUILTIN_PLUGINS:
        assert type(plugins.get_plugin(name)).name == name
    assert isinstance(plugins.get_plugin("hsc-raw"), HscRawPlugin)


def test_the_garbage_collector_is_paused_in_one_place():
    pausing = set()
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr == "disable" and isinstance(node.value, ast.Name)
                    and node.value.id == "gc"):
                pausing.add(rel)
    assert pausing - KNOWN_GC_PAUSES == {"_gc.py"}


def test_paused_gc_restores_the_collector_as_it_found_it():
    import gc

    from skybutler._gc import paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # an inner pause does not end an outer one
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a caller's own disable() is kept
    finally:
        gc.enable()
