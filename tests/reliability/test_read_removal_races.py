"""A get racing with the removal of its dataset: a clear error, never another dataset's bytes.

A get reads the dataset's file record, then opens the file. Each test runs a removal
(and a new put of the same dataset) between the two, in the hook of the reader's open.
"""

from __future__ import annotations

import errno
import uuid

import pytest

from skybutler import Butler
from skybutler.errors import DatasetNotFoundError, FileAccessError

DATASET_TYPE = "meta"


@pytest.fixture
def stored(tmp_path):
    root = str(tmp_path / "repo")
    butler = Butler.create(root, run="r")
    butler.register_dataset_type(DATASET_TYPE, [], "dict")
    ref = butler.put({"version": 1}, DATASET_TYPE)
    butler.close()
    return root, ref


@pytest.fixture(params=["local", "s3"])
def stored_anywhere(request, tmp_path):
    """`stored`, its files on local disk or in an S3 bucket (moto's server)."""
    root = str(tmp_path / "repo")
    kwargs = {}
    if request.param == "s3":
        bucket, options = request.getfixturevalue("s3_shared_bucket")
        kwargs = {"datastore": f"s3://{bucket}/{uuid.uuid4().hex}", "config": {"datastore": {"storage_options": options}}}
    butler = Butler.create(root, run="r", **kwargs)
    butler.register_dataset_type(DATASET_TYPE, [], "dict")
    ref = butler.put({"version": 1}, DATASET_TYPE)
    butler.close()
    return root, ref


def reader_meanwhile(root: str, action) -> Butler:  # noqa: ANN001 - runs ``action`` between record and open
    reader = Butler(root)
    really_open = reader.datastore.open
    done = []

    def open_after(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not done:
            done.append(action())
        return really_open(path, *args, **kwargs)

    reader.datastore.open = open_after  # type: ignore[method-assign]
    return reader


def test_a_get_of_a_dataset_removed_meanwhile_says_it_was_removed(stored):
    """Before: `FileLostError` "File of dataset meta is lost", as if the repository had lost it."""
    root, ref = stored

    def remove() -> None:
        with Butler(root) as other:
            other.remove_runs(["r"])

    reader = reader_meanwhile(root, remove)
    with pytest.raises(DatasetNotFoundError, match="removed while it was read"):
        reader.get(ref)
    reader.close()


def test_a_file_gone_while_its_row_stays_is_still_lost(stored):
    """A file gone while its row stays is lost, as before (the new check does not hide it)."""
    import os

    root, ref = stored
    with Butler(root) as b:
        (record,) = b.registry.get_files([ref.id]).values()
    os.unlink(os.path.join(root, record.path))
    with Butler(root) as reader, pytest.raises(FileAccessError, match="is lost") as caught:
        reader.get(ref)
    assert caught.value.errno == errno.ENOENT


def test_a_get_never_returns_the_dataset_stored_in_place_of_the_removed_one(stored_anywhere):
    """Removed and stored again (a new id, the same path) between the get's record and its open.

    The get of the removed dataset opens the path and reads the new dataset's bytes (on
    an object store too: there the time its store says the object was placed tells).
    """
    root, ref = stored_anywhere

    def remove_and_store_again() -> None:
        with Butler(root, run="r") as other:
            other.remove_runs(["r"])
            other.put({"version": 2}, DATASET_TYPE)

    reader = reader_meanwhile(root, remove_and_store_again)
    try:
        with pytest.raises(DatasetNotFoundError):
            reader.get(ref)
    finally:
        reader.close()
