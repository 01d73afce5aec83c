"""A read-only butler cannot write, even through its registry or its database connections."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from skybutler import Butler, CollectionType, ReadOnlyError


@pytest.fixture(params=["sqlite-local", "postgresql-local"])
def backend(request):
    return request.param


def test_a_read_only_butler_refuses_writes_below_the_facade(make_butler):
    butler = make_butler(run="run", records=True)
    butler.register_dataset_type("metadata", ["instrument"], "dict")
    ref = butler.put({"a": 1}, "metadata", instrument="HSC")
    ro = Butler(butler.root, writeable=False)
    before = ro.registry.collections()
    with pytest.raises(ReadOnlyError):
        ro.registry.register_collection("sneaky", CollectionType.TAGGED)
    with pytest.raises(ReadOnlyError):
        ro.registry.set_chain("chain", ["run"])
    with pytest.raises(ReadOnlyError):
        ro.registry.insert_dimension_records("band", [{"band": "z"}])
    with pytest.raises(ReadOnlyError):
        ro.registry.remove_datasets([ref.id])
    # Even SQL that bypasses the registry's methods is refused by the database itself.
    with pytest.raises(sa.exc.DBAPIError), ro.registry.engine.connect() as conn:
        conn.execute(sa.delete(ro.registry.tables.dataset))
        conn.commit()
    assert ro.registry.collections() == before
    assert ro.get(ref) == {"a": 1}
    ro.close()
