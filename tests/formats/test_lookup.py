"""Finding a formatter by name and by storage class."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skybutler.errors import FormatError, StorageClassError
from skybutler.formats import (
    FORMATS,
    FitsFormatter,
    Formatter,
    JsonFormatter,
    ParquetFormatter,
    PickleFormatter,
    formatter_for,
    get_formatter,
)
from skybutler.model import STORAGE_CLASSES


def test_every_format_of_every_storage_class_is_known_and_stores_it():
    for storage_class in STORAGE_CLASSES.values():
        for name in storage_class.formats:
            assert storage_class.name in FORMATS[name].storage_classes


def test_every_formatter_says_what_it_is():
    for name, cls in FORMATS.items():
        assert cls.name == name
        assert cls.extension.startswith(".")
        assert cls.storage_classes
        assert isinstance(get_formatter(name), Formatter)


def test_get_formatter_by_short_name():
    assert isinstance(get_formatter("fits"), FitsFormatter)


def test_unknown_format_lists_known_names():
    with pytest.raises(FormatError, match="unknown format 'hdf5'; known: fits, json, npy, parquet"):
        get_formatter("hdf5")


def test_default_format_is_the_storage_class_first():
    assert isinstance(formatter_for("table"), ParquetFormatter)
    assert isinstance(formatter_for("dict"), JsonFormatter)
    assert isinstance(formatter_for("image"), FitsFormatter)


def test_other_allowed_format_is_used_when_asked():
    assert isinstance(formatter_for("table", "fits"), FitsFormatter)


def test_format_that_cannot_store_the_storage_class_is_refused_naming_the_allowed():
    with pytest.raises(FormatError, match="format 'parquet' cannot store storage class 'image'; allowed: fits"):
        formatter_for("image", "parquet")


def test_unknown_storage_class_is_a_storage_class_error():
    with pytest.raises(StorageClassError, match="Unknown storage class 'cube'"):
        formatter_for("cube")


def test_pickle_needs_the_repository_to_opt_in():
    with pytest.raises(FormatError, match=r"executes code.*formats.allow_pickle: true"):
        formatter_for("object")
    assert isinstance(formatter_for("object", allow_pickle=True), PickleFormatter)


def test_importing_formats_imports_neither_astropy_nor_pyarrow():
    code = (
        "import sys, skybutler.formats;"
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'astropy', 'pyarrow'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("path", "format"), [
    ("raw/HSC-903334-016.fits", "fits"), ("a/b.fit", "fits"), ("x.fits.fz", "fits"), ("T.PARQUET", "parquet"),
    ("t.pq", "parquet"), ("m.json", "json"), ("m.yml", "yaml"), ("m.yaml", "yaml"), ("a.npy", "npy"),
    ("run.log", "txt"), ("notes.txt", "txt"), ("data.bin", None), ("noext", None), ("dir.v2/noext", None),
    ("obj.pickle", None),  # never guessed: reading a pickle runs code
])
def test_a_file_name_suggests_its_format_from_the_formats_own_extensions(path, format):
    from skybutler.formats import guess_format

    assert guess_format(path) == format


def test_file_suffixes_keep_every_extension():
    from skybutler.formats import file_suffixes

    assert file_suffixes("raw/x.fits.fz") == ".fits.fz"
    assert file_suffixes("dir.v2/noext") == ""
    assert file_suffixes(".hidden.json") == ".json"
