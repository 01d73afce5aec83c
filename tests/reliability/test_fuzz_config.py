"""Fuzzing ``skybutler.yaml``: any file either opens the repository or is one `SkyButlerError` line.

Random YAML text, random documents, and mappings shaped like the configuration
(known sections and keys, plus unknown ones) with values of every YAML type. A
SkyButlerError with a one-line message is the only acceptable failure: never a
pydantic ValidationError, a TypeError from a list where a mapping was expected,
or a traceback-shaped message.
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skybutler import Butler, SkyButlerError
from skybutler.config import CONFIG_FILE

SECTIONS = {
    "registry": ["db", "namespace", "sync_every_commit"],
    "datastore": ["root", "checksum", "storage_options"],
    "templates": ["default", "dataset_types", "runs"],
    "formats": ["allow_pickle", "storage_classes", "dataset_types"],
    "pipelines": ["max_quanta"],
}
# Values a user might really write for the keys where anything else would reach a server or the network.
DB = st.sampled_from(["sqlite:///registry.sqlite3", "sqlite://", "sqlite:///missing.db", "", "nonsense",
                      "mysql://x/y", "postgresql", "sqlite:////"])
ROOT = st.sampled_from([".", "data", "memory://fuzz", "s3", "ftp://host/x", "", "file:///nonexistent", "~"])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
keys = st.one_of(st.text(max_size=10), st.integers(), st.booleans())


@st.composite
def shaped(draw):
    """A mapping shaped like the configuration: known sections and keys, random values, some unknown keys."""
    doc = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "extra"]), unique=True, max_size=4)):
        if draw(st.integers(0, 9)) == 0:
            doc[section] = draw(values)  # a section that is not a mapping
            continue
        body = {}
        for key in draw(st.lists(st.sampled_from(SECTIONS.get(section, ["x"]) + ["unknown"]), unique=True)):
            strategy = {"db": st.one_of(DB, values), "root": st.one_of(ROOT, values)}.get(key, values)
            body[key] = draw(strategy)
        doc[section] = body
    if draw(st.booleans()):
        doc[draw(keys)] = draw(values)
    return doc


def _safe_text(text: str) -> bool:
    return "registry" not in text and "datastore" not in text  # keep raw text off the network and the disk


documents = st.one_of(
    st.text(max_size=80).filter(_safe_text),
    values.map(lambda v: yaml.safe_dump(v)),
    shaped().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.sampled_from(["a: [1,\n", "{{{", "- - -", "a: &x [*x]", "!!python/object:os.system {}", "? [a]\n: b\n",
                     "registry: !!binary aGk=\n", "\t- tab", "%YAML 9.9\n---\na: 1\n"]),
)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "repo"
    Butler.create(root).close()
    return root


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=documents)
def test_any_configuration_file_opens_or_is_one_skybutler_error(repository, tmp_path_factory, text):
    (repository / CONFIG_FILE).write_text(text)
    try:
        butler = Butler(repository, writeable=False)
    except SkyButlerError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"multi-line error for {text!r}: {message!r}"
        assert "Traceback" not in message
    else:
        butler.close()
    # Whatever the file said, opening it wrote nothing into the repository.
    extra = {p.name for p in repository.iterdir()} - {CONFIG_FILE, "registry.sqlite3", "registry.sqlite3-wal",
                                                      "registry.sqlite3-shm"}
    for name in extra:
        shutil.rmtree(repository / name, ignore_errors=True)
    assert not extra, f"opening {text!r} created {extra}"
