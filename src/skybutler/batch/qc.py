"""Log QC: operator patterns (regular expression -> severity) matched against each step's log.

A campaign lists patterns, global or for some tasks only; the job runner matches
them against the log of every quantum as it finishes (the log dataset of a quantum
that succeeded, the log tail kept in the execution record of one that failed) and
hands the matching lines back in its outcome, where the merge turns them into rows
joined to executions and jobs.

Each regular expression is compiled once per process, however many quanta and
jobs use it; an invalid one is a `ConfigError` naming it, so a campaign can be
checked (`check_patterns`) before anything is submitted.

Examples
--------
>>> from skybutler.batch.manifest import QCPattern
>>> patterns = [QCPattern(pattern=r"PSF fit failed", severity="error", tasks=["process_ccd"])]
>>> match_log("start\\nPSF fit failed on star 7\\nend\\n", patterns, "process_ccd")
[QCLine(pattern='PSF fit failed', severity='error', line_number=2, line='PSF fit failed on star 7')]
>>> match_log("PSF fit failed\\n", patterns, "make_warp")
[]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ..errors import ConfigError
from .manifest import QCPattern

__all__ = ["MAX_LINE", "QCLine", "applies_to", "check_patterns", "compile_pattern", "match_log"]

MAX_LINE = 1000
"""Characters of a matching line kept (a line of a megabyte of numbers must not become a database row)."""


class QCLine(NamedTuple):
    """One log line that matched a pattern."""

    pattern: str
    severity: str
    line_number: int
    """1-based, in the text given to `match_log`."""
    line: str
    """The line without its line break, cut at `MAX_LINE` characters."""


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A QC pattern compiled (once per process: cached by its text).

    Raises
    ------
    ConfigError
        If ``pattern`` is not a valid regular expression (the message quotes it).
    """
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"QC pattern {pattern!r} is not a valid regular expression: {exc}") from None


def check_patterns(patterns: Iterable[QCPattern]) -> None:
    """Compile every pattern; `ConfigError` for the first invalid one (before any job runs)."""
    for p in patterns:
        compile_pattern(p.pattern)


def applies_to(pattern: QCPattern, task_label: str | None) -> bool:
    """Whether ``pattern`` is matched against the logs of ``task_label`` (a pattern without tasks: all)."""
    return not pattern.tasks or (task_label is not None and task_label in pattern.tasks)


def match_log(text: str, patterns: Sequence[QCPattern], task_label: str | None) -> list[QCLine]:
    """The lines of ``text`` that match the patterns applying to ``task_label``.

    Parameters
    ----------
    text
        A log (lines separated by line breaks).
    patterns
        The operator's patterns; those whose ``tasks`` do not name ``task_label`` are skipped.
    task_label
        The task whose log this is (None: only patterns for every task apply).

    Returns
    -------
    list[QCLine]
        One entry per (line, pattern) that matched (`re.search`: anywhere in the line), in
        line order, then pattern order.

    Raises
    ------
    ConfigError
        If a pattern is not a valid regular expression.
    """
    active = [(p, compile_pattern(p.pattern)) for p in patterns if applies_to(p, task_label)]
    if not active or not text:
        return []
    out: list[QCLine] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for p, regex in active:
            if regex.search(line):
                kept = line if len(line) <= MAX_LINE else line[:MAX_LINE - 1] + "…"
                out.append(QCLine(p.pattern, p.severity, number, kept))
    return out
