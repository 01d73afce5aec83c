"""The dimension universe: which dimensions exist and how they relate."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DataIdError
from ..model import DataId

_METADATA_TYPES = {"int": int, "float": float, "str": str, "datetime": datetime.datetime, "bool": bool}
_KEY_TYPES = {"int": int, "str": str}


MAX_KEY_LENGTH = 128
"""Longest string value of a dimension (the registry's column width)."""


def text_problem(value: str, limit: int = MAX_KEY_LENGTH) -> str | None:
    """Why a text PostgreSQL cannot store (and SQLite would) is refused, or None when it fits.

    Refused alike on both databases, before either sees it, so a repository means the
    same on both: a NUL character, or more characters than the registry's column holds.
    """
    if "\0" in value:
        return "contains a NUL character"
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} fit"
    return None


@dataclass(frozen=True)
class Element:
    """One element of the universe: a dimension, or a record-only element.

    Attributes
    ----------
    name
        The element name, also the column holding a dimension's own value.
    key_type
        ``"int"`` or ``"str"`` for dimensions; ``None`` for record-only elements.
    requires
        Dimensions whose values are part of this element's identity.
    implies
        Dimensions whose values follow from this element's record.
    metadata
        Extra record columns, name to type name.
    region
        Whether records carry a sky region.
    """

    name: str
    key_type: str | None
    requires: tuple[str, ...] = ()
    implies: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    region: bool = False

    @property
    def is_dimension(self) -> bool:
        return self.key_type is not None

    @property
    def primary_key(self) -> tuple[str, ...]:
        """Columns identifying a record: required dimensions, then the element's own value."""
        return self.requires + ((self.name,) if self.is_dimension else ())

    @property
    def table_name(self) -> str:
        return f"dim_{self.name}"


class DimensionUniverse:
    """All elements of a repository, read from one YAML document.

    Examples
    --------
    >>> u = DimensionUniverse.default()
    >>> u.closure(["visit", "detector"])
    ('instrument', 'detector', 'visit')
    >>> u.implied_closure("visit")
    ('physical_filter', 'day_obs', 'band')
    """

    def __init__(self, document: Mapping[str, Any]):
        self.document = dict(document)
        try:
            raw_elements = document["elements"]
        except (KeyError, TypeError):
            raise ConfigError("A dimension universe needs an 'elements' mapping") from None
        self.name = str(document.get("name", "custom"))
        self.version = int(document.get("version", 1))
        self.elements: dict[str, Element] = {}
        for name, spec in raw_elements.items():
            spec = spec or {}
            if not name.isidentifier() or name != name.lower():
                raise ConfigError(f"Dimension universe: element name {name!r} must be a lower-case identifier")
            record_only = bool(spec.get("record_only", False))
            key_type = None if record_only else str(spec.get("key_type", "int"))
            if key_type is not None and key_type not in _KEY_TYPES:
                raise ConfigError(f"Dimension {name!r}: key_type must be int or str, not {key_type!r}")
            metadata = {str(k): str(v) for k, v in (spec.get("metadata") or {}).items()}
            for col, typ in metadata.items():
                if typ not in _METADATA_TYPES:
                    raise ConfigError(
                        f"Dimension {name!r}: metadata column {col!r} has unknown type {typ!r}; "
                        f"use one of {', '.join(_METADATA_TYPES)}"
                    )
            self.elements[name] = Element(
                name=name,
                key_type=key_type,
                requires=tuple(spec.get("requires") or ()),
                implies=tuple(spec.get("implies") or ()),
                metadata=metadata,
                region=bool(spec.get("region", False)),
            )
        for el in self.elements.values():
            for dep in el.requires + el.implies:
                if dep not in self.elements or not self.elements[dep].is_dimension:
                    raise ConfigError(f"Element {el.name!r} refers to unknown dimension {dep!r}")
        self.overlaps: list[tuple[str, str]] = []
        for pair in document.get("overlaps") or []:
            a, b = pair
            for x in (a, b):
                if x not in self.elements or not self.elements[x].region:
                    raise ConfigError(f"Overlap pair {pair}: {x!r} is not an element with a region")
            self.overlaps.append((a, b))
        self.declared_overlaps = list(self.overlaps)
        self.overlaps = self._complete_overlaps(self.overlaps)
        self.dimensions: tuple[str, ...] = self._ordered([n for n, e in self.elements.items() if e.is_dimension])
        # The universe never changes once built, so relations are computed once per argument.
        self._closures: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._implied: dict[tuple[str, ...], dict[str, str]] = {}

    def _complete_overlaps(self, declared: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The declared pairs plus the pairs of their coarser and finer relatives.

        A query joins exactly the finest region-bearing elements its dimensions allow, so
        declaring ``[visit_detector_region, patch]`` also needs visit x patch, visit x
        tract and visit_detector_region x tract (an element's relatives are the region
        elements whose keys contain, or are contained in, its own).
        """
        keys = {n: set(e.primary_key) for n, e in self.elements.items() if e.region}

        def relatives(x: str) -> list[str]:
            return [y for y in keys if keys[y] <= keys[x] or keys[x] <= keys[y]]

        out = list(declared)
        for a, b in declared:
            for a2 in relatives(a):
                for b2 in relatives(b):
                    if a2 == b2 or b2 in relatives(a2) or (a2, b2) in out or (b2, a2) in out:
                        continue
                    out.append((a2, b2))
        return out

    # -- construction ------------------------------------------------------------------

    @classmethod
    def default(cls) -> DimensionUniverse:
        """The universe shipped with skybutler (instrument, visit, detector, tract, patch, ...)."""
        text = resources.files(__package__).joinpath("default_universe.yaml").read_text()
        return cls(yaml.safe_load(text))

    @classmethod
    def from_file(cls, path: str | Path) -> DimensionUniverse:
        """Read a universe from a YAML file."""
        try:
            return cls(yaml.safe_load(Path(path).read_text()))
        except OSError as exc:
            raise ConfigError(f"Cannot read dimension universe file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"Dimension universe file {path} is not valid YAML: {exc}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.document, sort_keys=False)

    # -- relations ---------------------------------------------------------------------

    def _ordered(self, names: Iterable[str]) -> tuple[str, ...]:
        """Topological order (required dimensions first), ties broken by file order."""
        wanted = set(names)
        order: list[str] = []

        def visit(n: str) -> None:
            if n in order:
                return
            for dep in self.elements[n].requires:
                if dep in wanted:
                    visit(dep)
            order.append(n)

        for n in self.elements:
            if n in wanted:
                visit(n)
        return tuple(order)

    def element(self, name: str) -> Element:
        try:
            return self.elements[name]
        except KeyError:
            raise DataIdError(
                f"Unknown dimension {name!r}; this repository knows: {', '.join(self.dimensions)}"
            ) from None

    def closure(self, dimensions: Iterable[str]) -> tuple[str, ...]:
        """The dimensions plus everything they require, in universe order."""
        key = tuple(dimensions)
        cached = self._closures.get(key)
        if cached is None:
            cached = self._closures[key] = self._closure(key)
        return cached

    def _closure(self, dimensions: tuple[str, ...]) -> tuple[str, ...]:
        result: set[str] = set()
        stack = list(dimensions)
        while stack:
            d = stack.pop()
            el = self.element(d)
            if not el.is_dimension:
                raise DataIdError(f"{d!r} is a record-only element, not a dimension")
            if d not in result:
                result.add(d)
                stack.extend(el.requires)
        return self._ordered(result)

    def implied_closure(self, name: str) -> tuple[str, ...]:
        """Dimensions implied by an element, directly or through other implied dimensions."""
        out: list[str] = []
        stack = list(self.elements[name].implies)
        while stack:
            d = stack.pop(0)
            if d not in out:
                out.append(d)
                stack.extend(self.elements[d].implies)
        return tuple(out)

    def implied_by(self, dimensions: Iterable[str]) -> dict[str, str]:
        """Map each dimension implied by ``dimensions`` (and not among them) to the element giving it."""
        dims = tuple(dimensions)
        cached = self._implied.get(dims)
        if cached is not None:
            return cached
        result: dict[str, str] = {}
        for d in dims:
            for imp in self.implied_closure(d):
                if imp not in dims and imp not in result:
                    result[imp] = d
        self._implied[dims] = result
        return result

    def record_columns(self, name: str) -> dict[str, str]:
        """Non-key columns of an element's records: implied dimensions (typed by their keys), then metadata."""
        el = self.elements[name]
        cols: dict[str, str] = {}
        for imp in self.implied_closure(name):
            key_type = self.elements[imp].key_type
            assert key_type is not None
            cols[imp] = key_type
        cols.update(el.metadata)
        return cols

    # -- data ids ----------------------------------------------------------------------

    def coerce(self, dimension: str, value: Any) -> int | str:
        """Convert a value to a dimension's key type; mistyped values raise DataIdError."""
        key_type = self.element(dimension).key_type
        if key_type == "int":
            if isinstance(value, bool):
                raise DataIdError(f"Data id value {dimension}={value!r} must be an integer")
            numeric_text = isinstance(value, str) and value.strip().lstrip("-").isdigit()
            if not (numeric_text or isinstance(value, int) or hasattr(value, "__index__")):  # numpy integers too
                raise DataIdError(
                    f"Data id value {dimension}={value!r} must be an integer, not {type(value).__name__}")
            number = int(value)
            if not -(2**63) <= number < 2**63:  # the registry's BIGINT columns hold no more
                raise DataIdError(f"Data id value {dimension}={value!r} does not fit in a 64-bit integer")
            return number
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate: no database or file name can hold it
                    raise DataIdError(f"Data id value {dimension}={value!r} is not valid Unicode text") from None
            problem = text_problem(value)
            if problem is not None:
                raise DataIdError(f"Data id value {dimension}={value[:40]!r} {problem}")
            return value
        raise DataIdError(f"Data id value {dimension}={value!r} must be a string, not {type(value).__name__}")

    def data_id(self, dimensions: Iterable[str], values: Mapping[str, Any] | None = None,
                *, context: str = "", **kwargs: Any) -> DataId:
        """Build a validated data id for the given dimensions.

        Missing required keys and unknown keys raise `DataIdError`; values of
        implied dimensions (``band`` for a visit) may be given and are kept as
        implied values (checked against records later by the registry).
        """
        given = dict(values or {})
        given.update(kwargs)
        dims = self.closure(dimensions)
        where = f" for {context}" if context else ""
        missing = [d for d in dims if d not in given]
        if missing:
            raise DataIdError(
                f"Data id {_fmt(given)}{where} is missing {', '.join(missing)} "
                f"(needs {', '.join(dims)})"
            )
        implied_names = self.implied_by(dims)
        extra = [k for k in given if k not in dims and k not in implied_names]
        if extra:
            raise DataIdError(
                f"Data id {_fmt(given)}{where} has unexpected key(s) {', '.join(extra)} "
                f"(allowed: {', '.join(dims)}; implied: {', '.join(implied_names) or 'none'})"
            )
        required = {d: self.coerce(d, given[d]) for d in dims}
        implied = {k: self.coerce(k, v) for k, v in given.items() if k in implied_names}
        return DataId(required, implied=implied)


def _fmt(values: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in values.items()) + "}"
