"""The curated public API: `skybutler.__all__` is complete and sorted."""

import pytest

import skybutler


def test_all_is_sorted_and_importable():
    assert list(skybutler.__all__) == sorted(skybutler.__all__)
    for name in skybutler.__all__:
        assert getattr(skybutler, name) is not None


def test_every_error_is_exported_and_derives_from_the_root():
    from skybutler import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, skybutler.SkyButlerError)
        assert name in skybutler.__all__


def test_the_version_is_pyprojects_version():
    # `_version.py` holds a literal (no package-metadata lookup at import); this keeps it honest.
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert skybutler.__version__ == pyproject["project"]["version"]


def test_importing_the_package_imports_no_heavy_library():
    # Every CLI call, batch job and fresh-process benchmark pays for `import skybutler`:
    # the public names of the heavy layers are imported on first use.
    import subprocess
    import sys

    code = (
        "import sys, skybutler; skybutler.SkyButlerError; skybutler.__version__;"
        "print(sorted({m.partition('.')[0] for m in sys.modules}"
        " & {'numpy', 'sqlalchemy', 'pydantic', 'yaml', 'fsspec', 'astropy', 'pyarrow', 'rich'}),"
        " 'importlib.metadata' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "False"]


def test_the_lazy_names_are_the_objects_their_modules_define():
    from skybutler import butler, pipeline

    assert skybutler.Butler is butler.Butler
    assert skybutler.build_quantum_graph is pipeline.build_quantum_graph
    assert set(skybutler.__all__) <= set(dir(skybutler))
    assert skybutler.registry.__name__ == "skybutler.registry"  # layers stay reachable as attributes
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        skybutler.nothing_here  # noqa: B018
