"""What each of the racing writer processes of tests/reliability/test_concurrency.py does.

Importable by the spawned processes (test modules are not).
"""

from __future__ import annotations

import traceback


def write(root: str, worker: int, n_puts: int, barrier) -> dict:
    """Open a new run shared with other workers, register shared types and records, put, race."""
    from skybutler import Butler, DatasetExistsError

    out: dict = {"worker": worker, "put": [], "race": None, "error": None}
    try:
        barrier.wait(timeout=120)
        # Several workers open the same new run and register the same dataset types and
        # the same dimension records at once.
        butler = Butler(root, run=f"shared/run{worker % 3}")
        butler.register_dataset_type(f"thing{worker % 2}", ["instrument", "detector"], "dict")
        butler.register_dataset_type("prize", ["instrument"], "dict")
        butler.insert_dimension_records("instrument", [{"instrument": "HSC"}], skip_existing=True)
        butler.insert_dimension_records("detector", [{"instrument": "HSC", "detector": d} for d in range(100)],
                                        skip_existing=True)
        for i in range(n_puts):
            detector = worker * n_puts + i
            ref = butler.put({"worker": worker, "i": i}, f"thing{worker % 2}", instrument="HSC", detector=detector)
            out["put"].append(str(ref.id))
        # Every worker puts the same data id into the same run: exactly one may win.
        racer = Butler(root, run="race")
        try:
            out["race"] = str(racer.put({"winner": worker}, "prize", instrument="HSC").id)
        except DatasetExistsError as exc:
            out["race"] = f"lost: {exc}"
    except Exception:  # reported to the test, which fails with the traceback
        out["error"] = traceback.format_exc()
    return out
