"""The tokens of ``where`` expressions, and the syntax errors that point at the text.

`skybutler.registry.expr` parses the tokens; this module reads the text into them:
names, keywords, binds, numbers (64-bit integers or finite floats), quoted strings,
time literals (``T'...'``, read as daf_butler reads them) and punctuation.
"""

from __future__ import annotations

import datetime
import math
import re
import warnings
from typing import Any, NamedTuple

from ..errors import QueryError
from ._expr_tree import INT64_MAX

__all__ = ["COMPARISONS", "FUNCTIONS", "Token", "syntax_error", "tokenize", "with_caret"]

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "BETWEEN", "OVERLAPS"})
FUNCTIONS = frozenset({"POINT", "CIRCLE", "BOX", "POLYGON", "GLOB", "UUID"})
"""Names that are functions when a ``(`` follows them (in any case)."""
COMPARISONS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
"""Comparison tokens, each with the operator it means (``<>`` is ``!=``)."""
_WORD = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(rf"{_WORD}(?:\.{_WORD}){{0,2}}")
_BIND_RE = re.compile(rf":({_WORD})")
# "0..9" is two integers around "..", never the float "0." followed by ".9".
_NUMBER_RE = re.compile(r"(?:[0-9]+\.(?!\.)[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GLUED_TO_NUMBER_RE = re.compile(r"[A-Za-z0-9_]|\.(?!\.)")
_MALFORMED_NUMBER_RE = re.compile(r"[A-Za-z0-9_.]*")
_MJD_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Token(NamedTuple):
    """One token: its kind, its text as written, its offset, and its value."""

    kind: str  # "name", "keyword", "bind", "value", a punctuation string, or "end"
    text: str  # as written, for messages
    pos: int  # 0-based offset into the expression
    value: Any = None

    def describe(self) -> str:
        """The token as a message names it (quoted, one line, at most 30 characters)."""
        if self.kind == "end":
            return "the end of the expression"
        text = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")  # messages are one line
        return text if text[-1:] in "'\"" else f"'{text}'"


def syntax_error(text: str, pos: int, what: str, found: Token | None = None) -> QueryError:
    """Build the error for a problem at ``pos``, with the expression and a caret under it."""
    return QueryError(with_caret(text, pos, f"Invalid query expression: {what}", found))


def with_caret(text: str, pos: int, message: str, found: Token | None = None) -> str:
    """``message`` with where it happened: line and column, the line itself, and a caret under ``pos``."""
    pos = max(0, min(pos, len(text)))
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : len(text) if line_end < 0 else line_end].replace("\t", " ").replace("\r", " ")
    column = pos - line_start + 1
    where = f"column {column}"
    if "\n" in text:
        where = f"line {text.count(chr(10), 0, pos) + 1}, {where}"
    message = f"{message} at {where}"
    if found is not None:
        message += f", found {found.describe()}"
    return f"{message}\n  {line}\n  {' ' * (column - 1)}^"


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string whose opening quote is at ``start``; return it and the end offset."""
    quote = text[start]
    pieces = []
    i = start + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise syntax_error(text, start, f"unterminated string (no closing {quote})")
        pieces.append(text[i:end])
        if text.startswith(quote, end + 1):  # a doubled quote stands for one quote
            pieces.append(quote)
            i = end + 2
        else:
            return "".join(pieces), end + 1


# daf_butler's defaults: UTC for calendar formats, TT for Chandra seconds, TAI for the rest (MJD).
_UTC_FORMATS = frozenset({"iso", "isot", "fits", "yday", "unix", "datetime"})


def _parse_time(text: str, start: int, raw: str) -> datetime.datetime:
    """Read ``T'[format/]value[/scale]'`` as daf_butler does, into a naive UTC `datetime`.

    ISO text without a scale is UTC (an offset such as ``+02:00`` or ``Z`` is
    honoured); a bare number is an MJD in TAI; ``T'mjd/61000.5/tai'`` names both.
    """
    from astropy.time import Time

    def bad(why: str = "") -> QueryError:
        hint = "write ISO-8601 such as T'2026-01-01T00:00:00' or an MJD such as T'61000.5' (TAI)"
        shown = raw.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")  # messages are one line
        return syntax_error(text, start, f"bad time literal T'{shown}'{why}: {hint}")

    parts = raw.strip().split("/")
    fmt = scale = None
    if len(parts) == 3:
        fmt, value, scale = parts
    elif len(parts) == 2 and parts[0].lower() in Time.FORMATS:
        fmt, value = parts
    elif len(parts) == 2:
        value, scale = parts
    elif len(parts) == 1:
        value = parts[0]
    else:
        raise bad()
    fmt = fmt.lower() if fmt is not None else None
    scale = scale.lower() if scale is not None else None
    if fmt is not None and fmt not in Time.FORMATS:
        raise bad(f" (unknown time format {fmt!r})")
    if scale is not None and scale not in Time.SCALES:
        raise bad(f" (unknown time scale {scale!r}; one of {', '.join(Time.SCALES)})")
    if fmt is None and not _MJD_RE.fullmatch(value):
        try:  # ISO-8601 read by Python keeps offsets such as +02:00, which astropy refuses
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise bad() from None
        if parsed.tzinfo is not None:
            if scale not in (None, "utc"):
                raise bad(" (a UTC offset and a time scale cannot both be given)")
            return parsed.astimezone(datetime.UTC).replace(tzinfo=None)
        if scale in (None, "utc"):
            return parsed
        fmt, value = "datetime", parsed  # type: ignore[assignment]
    if fmt is None:
        fmt = "mjd"
    if scale is None:
        scale = "utc" if fmt in _UTC_FORMATS else "tt" if fmt == "cxcsec" else "tai"
    given: Any = value
    if isinstance(value, str) and _MJD_RE.fullmatch(value):
        given = float(value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "dubious year" for dates beyond the leap-second table
            result = Time(given, format=fmt, scale=scale).utc.to_datetime()
    except Exception:  # astropy raises several types, with long messages; ours says what to write
        raise bad() from None
    if not isinstance(result, datetime.datetime):
        raise bad()
    return result.replace(tzinfo=None)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with one of kind ``"end"``; `QueryError` for a bad token."""
    tokens: list[Token] = []
    append = tokens.append
    pos = 0
    length = len(text)
    # Checked in order of frequency: a list of 100,000 numbers must tokenize in well under a second.
    while pos < length:
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in _SINGLE:
            two = text[pos : pos + 2]
            if two in _DOUBLE:
                append(Token(two, two, pos))
                pos += 2
            else:
                append(Token(char, char, pos))
                pos += 1
            continue
        if char in "0123456789" or char == "." and text[pos + 1 : pos + 2].isdigit():
            pos = _read_number(text, pos, tokens)
            continue
        if char in "'\"":
            value, end = _read_string(text, pos)
            append(Token("value", text[pos:end], pos, value))
        elif char in "Tt" and text[pos + 1 : pos + 2] in ("'", '"'):
            raw, end = _read_string(text, pos + 1)
            append(Token("value", text[pos:end], pos, _parse_time(text, pos, raw)))
        elif match := _NAME_RE.match(text, pos):
            word = match.group()
            end = match.end()
            upper = word.upper()
            if upper in _KEYWORDS:
                append(Token("keyword", word, pos, upper))
            elif upper in ("TRUE", "FALSE"):
                append(Token("value", word, pos, upper == "TRUE"))
            else:
                append(Token("name", word, pos, word))
        elif match := _BIND_RE.match(text, pos):
            end = match.end()
            append(Token("bind", match.group(), pos, match.group(1)))
        elif text.startswith("..", pos) or char in "!:":
            two = text[pos : pos + 2]
            if two in _DOUBLE:
                append(Token(two, two, pos))
                end = pos + 2
            elif char == ":":
                append(Token(":", ":", pos))
                end = pos + 1
            else:
                raise syntax_error(text, pos, f"unexpected character {char!r}")
        else:
            raise syntax_error(text, pos, f"unexpected character {char!r}")
        pos = end
    tokens.append(Token("end", "", len(text)))
    return tokens


_SINGLE = frozenset("=<>(),-+*/%")
_DOUBLE = frozenset({"..", "<=", ">=", "<>", "!="})


def _read_number(text: str, pos: int, tokens: list[Token]) -> int:
    """Append the number at ``pos`` to ``tokens``; return the offset after it."""
    match = _NUMBER_RE.match(text, pos)
    assert match is not None
    end = match.end()
    if _GLUED_TO_NUMBER_RE.match(text, end):  # "903000abc", "1.2.3"; but "0..9" is a range
        glued = _MALFORMED_NUMBER_RE.match(text, pos)
        raise syntax_error(text, pos, f"malformed number '{glued.group() if glued else ''}'")
    number = match.group()
    numeric: int | float
    if "." in number or "e" in number or "E" in number:
        numeric = float(number)
        if not math.isfinite(numeric):
            raise syntax_error(text, pos, f"number {number} is too large")
    else:
        numeric = int(number)
        # Every integer column is 64-bit; a larger literal could only fail in the driver.
        if numeric > INT64_MAX:
            raise syntax_error(
                text,
                pos,
                f"integer {number} does not fit a 64-bit column (largest {INT64_MAX}); "
                "write it as a float (e.g. 1e20) if you meant one",
            )
    tokens.append(Token("value", number, pos, numeric))
    return end

