"""The error tree: one root, drawn in `skybutler.errors`' docstring, builtin mixins for user mistakes."""

from __future__ import annotations

import builtins
import errno
import re

import pytest

import skybutler
from skybutler import (
    Butler,
    CollectionError,
    ConfigError,
    FileAccessError,
    FileDataset,
    MissingDependencyError,
    RepositoryDamagedError,
    RepositoryExistsError,
    SchemaVersionError,
    SkyButlerError,
)
from skybutler import errors as errors_module


def _drawn_tree() -> dict[str, str]:
    """Class name -> the builtin named beside it in the docstring's tree ("" where none)."""
    drawn = {}
    for match in re.finditer(r"[─└├]── (\w+)(?:\((\w+)\))?", errors_module.__doc__ or ""):
        drawn[match.group(1)] = match.group(2) or ""
    return drawn


def test_the_docstring_draws_every_error_with_its_builtin():
    drawn = _drawn_tree()
    assert set(drawn) == set(errors_module.__all__) - {"SkyButlerError"}
    for name, builtin in drawn.items():
        cls = getattr(errors_module, name)
        assert issubclass(cls, SkyButlerError)
        if builtin:
            assert issubclass(cls, getattr(builtins, builtin)), name


@pytest.mark.parametrize("cls, builtin", [
    (RepositoryExistsError, FileExistsError), (RepositoryDamagedError, OSError),
    (SchemaVersionError, RuntimeError), (MissingDependencyError, ImportError), (MissingDependencyError, ConfigError),
])
def test_new_errors_catch_as_their_builtin(cls, builtin):
    with pytest.raises(builtin, match="names the thing"):
        raise cls("names the thing")
    assert str(cls("names the thing")) == "names the thing"


def test_no_bare_root_error_is_raised_outside_the_registry():
    """A user catches a named class; the root is only for catching everything."""
    from pathlib import Path

    package = Path(skybutler.__file__).parent
    bare = [str(p.relative_to(package)) for p in package.rglob("*.py")
            if "raise SkyButlerError(" in p.read_text(encoding="utf-8") and p.parts[-2] != "registry"]
    assert bare == []


def test_creating_over_a_repository_is_repository_exists(tmp_path):
    Butler.create(tmp_path / "repo").close()
    (tmp_path / "repo" / "marker").write_text("kept")
    with pytest.raises(RepositoryExistsError, match=f"{tmp_path / 'repo'} already holds a skybutler repository"):
        Butler.create(tmp_path / "repo")
    assert (tmp_path / "repo" / "marker").read_text() == "kept"


def test_writing_without_a_run_is_a_collection_error(tmp_path):
    butler = Butler.create(tmp_path / "repo")
    butler.register_dataset_type("blob", [], "dict")
    with pytest.raises(CollectionError, match="No run to write to"):
        butler.put({"a": 1}, "blob", {})


def test_ingest_of_missing_and_unreadable_files_keeps_the_errno(tmp_path):
    butler = Butler.create(tmp_path / "repo", run="r")
    butler.register_dataset_type("blob", [], "dict")
    with pytest.raises(FileAccessError) as info:
        butler.ingest([FileDataset(str(tmp_path / "absent.json"), "blob", {})])
    assert info.value.errno == errno.ENOENT and "absent.json" in str(info.value)
