"""Log QC: operator patterns matched line by line, per task, each regular expression compiled once."""

from __future__ import annotations

import pytest

from skybutler import ConfigError
from skybutler.batch.manifest import QCPattern
from skybutler.batch.qc import MAX_LINE, QCLine, check_patterns, compile_pattern, match_log

LOG = """2026-03-15 06:00:00 INFO make_calexp: Running make_calexp
2026-03-15 06:00:01 WARNING make_calexp: PSF fit failed for 3 stars
2026-03-15 06:00:02 INFO make_calexp: zero point 27.1
[stderr] Traceback: MemoryError
"""


def test_each_matching_line_is_reported_with_its_pattern_severity_and_1_based_line_number():
    patterns = [QCPattern(pattern=r"PSF fit failed", severity="warning"),
                QCPattern(pattern=r"MemoryError|Segmentation", severity="error")]
    assert match_log(LOG, patterns, "make_calexp") == [
        QCLine("PSF fit failed", "warning", 2, "2026-03-15 06:00:01 WARNING make_calexp: PSF fit failed for 3 stars"),
        QCLine("MemoryError|Segmentation", "error", 4, "[stderr] Traceback: MemoryError"),
    ]


def test_a_pattern_naming_tasks_applies_only_to_their_logs_and_one_naming_none_to_every_task():
    patterns = [QCPattern(pattern="zero point", severity="info", tasks=["make_calexp"]),
                QCPattern(pattern="Running", severity="debug")]
    assert [m.pattern for m in match_log(LOG, patterns, "make_calexp")] == ["Running", "zero point"]
    assert [m.pattern for m in match_log(LOG, patterns, "coadd")] == ["Running"]
    assert [m.pattern for m in match_log(LOG, patterns, None)] == ["Running"]


def test_a_line_matching_two_patterns_is_reported_once_for_each_in_pattern_order():
    patterns = [QCPattern(pattern="fit", severity="a"), QCPattern(pattern="PSF", severity="b")]
    assert [(m.line_number, m.severity) for m in match_log(LOG, patterns, "t")] == [(2, "a"), (2, "b")]


def test_a_pattern_matches_anywhere_in_a_line_and_anchors_work_per_line():
    assert [m.line_number for m in match_log(LOG, [QCPattern(pattern=r"^\[stderr\]")], "t")] == [4]
    assert match_log(LOG, [QCPattern(pattern=r"^PSF")], "t") == []


def test_a_very_long_matching_line_is_cut_to_max_line_characters():
    text = "ERROR " + "9" * 10 * MAX_LINE
    (found,) = match_log(text, [QCPattern(pattern="ERROR")], "t")
    assert len(found.line) == MAX_LINE and found.line.startswith("ERROR 999") and found.line.endswith("…")


def test_no_patterns_or_an_empty_log_match_nothing():
    assert match_log(LOG, [], "t") == []
    assert match_log("", [QCPattern(pattern=".*")], "t") == []


def test_an_invalid_regular_expression_is_a_config_error_quoting_it():
    with pytest.raises(ConfigError, match=r"QC pattern 'PSF \(fit' is not a valid regular expression"):
        check_patterns([QCPattern(pattern="ok"), QCPattern(pattern="PSF (fit")])
    with pytest.raises(ConfigError, match="not a valid"):
        match_log(LOG, [QCPattern(pattern="[unclosed")], "t")


def test_each_pattern_is_compiled_once_however_many_logs_it_is_matched_against():
    compile_pattern.cache_clear()
    patterns = [QCPattern(pattern=r"zero point \d+"), QCPattern(pattern="PSF")]
    for _ in range(50):
        match_log(LOG, patterns, "make_calexp")
    info = compile_pattern.cache_info()
    assert (info.misses, info.hits) == (2, 98)
