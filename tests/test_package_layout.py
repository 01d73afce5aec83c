"""One of each, checked statically with `ast`: the package root, the demo and the GC pause stay in their place.

(a) No module of the package imports the package root ``skybutler`` (absolute
    ``import skybutler...`` / ``from skybutler... import``, or ``from .. import name``
    reaching the root for something that is not a submodule): the root imports every
    layer, so such an import ties a low layer to all the others.
(b) ``ops`` depends on nothing in ``demo`` (the demo is the last layer); every ingest
    plugin lives in ``ops``.
(c) The cyclic garbage collector is paused in one place only (`skybutler._gc.paused_gc`).

Modules that broke a rule when it was introduced are listed as known exceptions, so
the test fails on any new one; remove an entry when its module is mended.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from skybutler.ops import ingest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "skybutler"

# Alembic loads migration scripts by file path, outside the package: they must import absolutely.
ABSOLUTE_IMPORTS_ALLOWED = ("registry/migrations/",)

# Found when rule (a) was introduced; owned by the registry split (issue 10, item 1).
KNOWN_ROOT_IMPORTS = {"registry/_expr_sql.py", "registry/expr.py"}

# Found when rule (c) was introduced: the registry's own copy of the helper, to replace by `paused_gc`.
KNOWN_GC_PAUSES = {"registry/queries.py"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
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
    offenders = {rel for rel, tree in _modules() if not rel.startswith(ABSOLUTE_IMPORTS_ALLOWED)
                 and any(_imports_root(rel, node) for node in ast.walk(tree))}
    assert offenders - KNOWN_ROOT_IMPORTS == set(), "import from the layer's module, relatively"
    assert _imports_root("pipeline/builder.py", ast.parse("from .. import __version__").body[0])
    assert not _imports_root("pipeline/builder.py", ast.parse("from .._version import __version__").body[0])
    assert not _imports_root("cli/x.py", ast.parse("from .. import errors").body[0])


def test_ops_does_not_depend_on_the_demo():
    for rel, tree in _modules():
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
    from skybutler.ops.hsc import header_to_data_id

    assert ingest.PLUGINS and all(target.startswith(".") for target in ingest.PLUGINS.values())
    for name in ingest.PLUGINS:
        assert callable(ingest.translator(name))
    assert ingest.translator("hsc-raw") is header_to_data_id


def test_the_garbage_collector_is_paused_in_one_place():
    pausing = set()
    for rel, tree in _modules():
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
