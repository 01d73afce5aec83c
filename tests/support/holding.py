"""Two writers on one repository, one held at the critical moment: the harness of the race tests."""

from __future__ import annotations

import threading
from collections.abc import Callable


def while_a_holds(a, change_a: Callable[[], object], change_b: Callable[[], object]) -> dict:  # noqa: ANN001
    """Run ``change_a`` in A's transaction, then ``change_b`` in another thread while A has not committed.

    ``a`` is a `Butler` (or a `Registry`: anything with ``transaction()``). A commits one
    second after its change (or as soon as B is done). Returns B's outcome:
    ``{"done": True}`` or ``{"error": exc}``.
    """
    changed, outcome = threading.Event(), {}

    def run_b() -> None:
        changed.wait(30)
        try:
            change_b()
            outcome["done"] = True
        except Exception as exc:  # reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run_b)
    thread.start()
    with a.transaction():
        change_a()
        changed.set()
        thread.join(timeout=1.0)  # B finishes here unless it waits for A's commit
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome


def in_thread(call: Callable[[], object], key: str) -> tuple[threading.Thread, dict]:
    """A thread (not started) that runs ``call``, and the dict it leaves ``{key: result}`` or ``{"error": exc}`` in."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome[key] = call()
        except BaseException as err:  # reported by the test
            outcome["error"] = err

    return threading.Thread(target=run), outcome
