"""The curated public API: `skybutler.__all__` is complete and sorted."""

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
