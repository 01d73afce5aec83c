"""Data ids and dataset refs are values: equality, hashing, immutability, pickling and repr.

Refs built many at a time (`DatasetRef.from_columns`, `DataId.from_rows`, as queries
build them) are indistinguishable from refs built one by one.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
import uuid
import weakref

import pytest

from skybutler.model import DataId, DatasetRef, DatasetType, _data_id, uuids_from_hex

CALEXP = DatasetType("calexp", ("instrument", "visit", "detector"), "image")
KEYS = ("instrument", "visit", "detector")


def _ref(detector: int = 16, run: str = "HSC/runs/a", id: uuid.UUID | None = None) -> DatasetRef:
    data_id = DataId({"instrument": "HSC", "visit": 903334, "detector": detector})
    return DatasetRef(id or uuid.UUID(int=detector), CALEXP, data_id, run)


def test_data_id_is_a_mapping_equal_to_dicts_whatever_the_key_order():
    data_id = DataId({"instrument": "HSC", "visit": 903334}, detector=16)
    assert dict(data_id) == {"instrument": "HSC", "visit": 903334, "detector": 16}
    assert list(data_id) == ["instrument", "visit", "detector"]
    assert len(data_id) == 3 and "visit" in data_id and "band" not in data_id
    assert data_id == {"detector": 16, "visit": 903334, "instrument": "HSC"}
    reordered = DataId({"detector": 16, "visit": 903334, "instrument": "HSC"})
    assert data_id == reordered and hash(data_id) == hash(reordered)
    assert data_id != DataId({"instrument": "HSC", "visit": 903334, "detector": 17})
    assert data_id != {"instrument": "HSC", "visit": 903334}
    assert data_id.get("band") is None
    with pytest.raises(KeyError):
        data_id["band"]


def test_data_id_repr_str_and_key():
    data_id = DataId({"instrument": "HSC", "visit": 903334, "detector": 16})
    assert repr(data_id) == "DataId(instrument='HSC', visit=903334, detector=16)"
    assert str(data_id) == "instrument=HSC, visit=903334, detector=16"
    assert data_id.key() == "detector=16|instrument=HSC|visit=903334"


def test_implied_values_are_readable_but_not_part_of_the_identity():
    data_id = DataId({"instrument": "HSC", "visit": 903334})
    expanded = data_id.with_implied({"band": "r"})
    assert expanded["band"] == "r" and dict(expanded.implied) == {"band": "r"}
    assert "band" not in expanded and list(expanded) == ["instrument", "visit"]
    assert expanded == data_id and hash(expanded) == hash(data_id)
    assert expanded.full == {"instrument": "HSC", "visit": 903334, "band": "r"}
    assert expanded.subset(["visit", "band"]) == {"visit": 903334, "band": "r"}
    assert dict(data_id.implied) == {}


def test_data_ids_and_refs_survive_pickle_and_copy():
    ref = dataclasses.replace(_ref(), extra={"path": "a/b.fits"})
    ref.data_id.with_implied({"band": "r"})
    expanded = ref.data_id.with_implied({"band": "r"})
    for value in (ref, ref.data_id, expanded):
        for clone in (pickle.loads(pickle.dumps(value)), copy.copy(value), copy.deepcopy(value)):
            assert clone == value and hash(clone) == hash(value) and repr(clone) == repr(value)
    again = pickle.loads(pickle.dumps(expanded))
    assert again["band"] == "r"
    assert pickle.loads(pickle.dumps(ref)).extra == {"path": "a/b.fits"}


def test_an_unpickled_data_id_hashes_as_one_made_in_the_new_process():
    # str hashes differ between processes: a hash computed before pickling must not travel.
    data_id = DataId({"instrument": "HSC", "visit": 903334, "detector": 16})
    hash(data_id)
    # The new process loads the module alone (importing the whole package takes seconds).
    code = ("import importlib.util, pickle, sys, types\n"
            "for name in ('skybutler', 'skybutler.model'): sys.modules[name] = types.ModuleType(name)\n"
            f"spec = importlib.util.spec_from_file_location('skybutler.model._data_id', {_data_id.__file__!r})\n"
            "module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "d = pickle.loads(sys.stdin.buffer.read())\n"
            "print(d in {module.DataId({'instrument': 'HSC', 'visit': 903334, 'detector': 16})})")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(data_id), capture_output=True,
                         env=env, check=True)
    assert out.stdout.strip() == b"True"


def test_refs_compare_and_hash_by_id_type_data_id_and_run_not_extra():
    ref = _ref()
    same = DatasetRef(ref.id, CALEXP, DataId(dict(ref.data_id)), ref.run, extra={"path": "x"})
    assert ref == same and hash(ref) == hash(same)
    assert len({ref, same, _ref(detector=17)}) == 2
    assert ref != _ref(run="other") and ref != _ref(id=uuid.UUID(int=99))
    assert ref != (ref.id, CALEXP, ref.data_id, ref.run)


def test_refs_are_immutable_and_their_extra_their_own():
    ref, other = _ref(), _ref()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.run = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.anything = 1  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del ref.run  # type: ignore[misc]
    ref.extra["path"] = "a"
    assert other.extra == {}
    assert weakref.ref(ref)() is ref


def test_ref_repr_and_str():
    ref = _ref()
    assert repr(ref) == (f"DatasetRef(id={ref.id!r}, dataset_type={CALEXP!r}, "
                         f"data_id=DataId(instrument='HSC', visit=903334, detector=16), run='HSC/runs/a')")
    assert str(ref) == f"calexp@{{instrument=HSC, visit=903334, detector=16}} [HSC/runs/a] ({ref.id})"
    assert [f.name for f in dataclasses.fields(DatasetRef)] == ["id", "dataset_type", "data_id", "run", "extra"]


def test_refs_built_from_columns_are_the_refs_built_one_by_one():
    ids = [uuid.uuid4() for _ in range(3)]
    rows = [("HSC", 903334, d) for d in range(3)]
    data_ids = DataId.from_rows(KEYS, rows)
    refs = DatasetRef.from_columns(CALEXP, uuids_from_hex([i.hex for i in ids]), data_ids, ["a", "b", "a"])
    one_by_one = [DatasetRef(i, CALEXP, DataId(dict(zip(KEYS, row, strict=True))), run)
                  for i, row, run in zip(ids, rows, ["a", "b", "a"], strict=True)]
    assert refs == one_by_one
    for built, single in zip(refs, one_by_one, strict=True):
        assert type(built) is DatasetRef and hash(built) == hash(single) and repr(built) == repr(single)
        assert built.id == single.id and built.id.version == 4 and str(built.id) == str(single.id)
        assert built.data_id.key() == single.data_id.key() and dict(built.data_id.implied) == {}
        assert pickle.loads(pickle.dumps(built)) == single
        assert built.extra == {}
    refs[0].extra["path"] = "x"
    assert refs[1].extra == {}
    with pytest.raises(ValueError, match="columns"):
        DatasetRef.from_columns(CALEXP, ids, data_ids[:2], ["a", "b", "a"])
    with pytest.raises(ValueError, match="values"):
        DataId.from_rows(KEYS, [("HSC", 903334)])


def test_uuids_from_hex_refuse_what_is_not_an_id():
    assert uuids_from_hex(["0" * 31 + "1"]) == [uuid.UUID(int=1)]
    with pytest.raises(ValueError):
        uuids_from_hex(["xyz"])


def test_data_ids_without_implied_values_report_none_and_take_them_when_given():
    from skybutler.model import data_ids_of_tuples

    made = data_ids_of_tuples(KEYS, [("HSC", 903334, 1)])[0]
    assert made == DataId(dict(zip(KEYS, ("HSC", 903334, 1), strict=True))) and dict(made.implied) == {}
    assert made.full == dict(made) and "band" not in made
    with pytest.raises(KeyError):
        made["band"]
    expanded = made.with_implied({"band": "r"})
    assert expanded["band"] == "r" and expanded == made and hash(expanded) == hash(made)
    assert pickle.loads(pickle.dumps(expanded)).implied == {"band": "r"}
    assert dict(pickle.loads(pickle.dumps(made)).implied) == {}
