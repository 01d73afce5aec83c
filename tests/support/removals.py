"""Removals stopped half way, for the tests of what other writers do meanwhile."""

from __future__ import annotations

import errno

import pytest

from skybutler import _butler_remove
from skybutler.errors import FileAccessError


def remove_crashing_after_the_files(remove, monkeypatch) -> None:  # noqa: ANN001
    """Run ``remove()`` (a `remove_runs`) so that it stops after deleting its files, its list left behind.

    As a kill between the files' deletion and the list's: the rows and the files are gone,
    the removal list stays for `finish_removals`.
    """
    really_delete = _butler_remove.delete_files

    def crash_after_deleting(datastore, paths):  # noqa: ANN001, ANN202
        really_delete(datastore, paths)
        raise FileAccessError(errno.EIO, "interrupted (injected)")

    with monkeypatch.context() as patched:
        patched.setattr(_butler_remove, "delete_files", crash_after_deleting)
        with pytest.raises(FileAccessError, match="injected"):
            remove()
