"""One helper for every bulk allocation: pause the cyclic garbage collector.

A private module at the package root because layers from the registry up use it
(query results, quantum graphs) and it belongs to none of them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (if it runs) while making many small acyclic objects.

    Query results and quantum graphs are 10^5-10^6 small objects without cycles; each
    collection pass would walk all of them again, which made building and reading
    several times slower. The collector is restarted on exit only if it was running,
    so nested pauses and a caller's own ``gc.disable()`` are honoured.

    Examples
    --------
    >>> import gc
    >>> with paused_gc():
    ...     gc.isenabled()
    False
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
