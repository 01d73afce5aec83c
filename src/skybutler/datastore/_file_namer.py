"""Naming many files fast: `FileNamer` (see `FileTemplate.namer`) and the escaping of values (`sanitize`).

`skybutler.datastore.templates` holds the template rules; this module compiles them, for
one dataset type in one run, into a format string filled from data id values by position.
"""

from __future__ import annotations

import functools
import operator
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model import DataIdValue, DatasetRef

if TYPE_CHECKING:
    from .templates import FileTemplate, TemplateField

__all__ = ["MAX_SEGMENT_BYTES", "SPECIAL_FIELDS", "FileNamer", "sanitize", "sanitize_cached"]

SPECIAL_FIELDS = frozenset({"run", "dataset_type", "id", "data_id"})
"""Field names filled from the dataset ref itself rather than from its data id."""

MAX_SEGMENT_BYTES = 255
"""Longest file or directory name most filesystems (and S3 key segments, by convention) accept."""

_SAFE = frozenset(string.ascii_letters + string.digits + "-_.,+=@")
"""Characters kept as they are: letters, digits and punctuation that is harmless in file
names, shells, URLs and S3 keys. ``%`` (the escape character), ``/``, ``\\``, ``:``, ``~``,
spaces, and anything else, non-ASCII included, is escaped."""
_PLAIN = re.compile(r"[A-Za-z0-9_,+=@-][A-Za-z0-9_.,+=@-]*\Z")


def sanitize(value: str, escape: str = "") -> str:
    """Return ``value`` escaped to be (part of) one path segment, distinct for distinct values.

    Letters, digits and ``-_.,+=@`` are kept; every other character, the escape
    character ``%`` itself included, becomes ``%XX`` for each byte of its UTF-8 form
    (lone surrogates too), as in URLs. A leading ``.`` is escaped (so ``.`` and ``..``
    are harmless and no value makes a hidden file that could be mistaken for a
    temporary one), and the empty value becomes ``%``, which no other value gives.
    Escaping rather than replacing makes it injective: ``urllib.parse.unquote`` gives
    the value back, so two values never share a name (``a/b`` is ``a%2Fb``, ``a_b``
    stays ``a_b``).

    Parameters
    ----------
    value
        The text of a value (a formatted data id value, a run, a variable).
    escape
        Safe characters to escape as well: the separator a template puts between this
        value and the next one in the same path segment (``_`` in ``{band}_{visit}``),
        so that where one value ends stays unambiguous.

    Examples
    --------
    >>> sanitize("8,6"), sanitize("HSC-R"), sanitize("903334")
    ('8,6', 'HSC-R', '903334')
    >>> sanitize("../../etc")
    '%2E.%2F..%2Fetc'
    >>> sanitize("a_b", escape="_")
    'a%5Fb'
    """
    # Fast path (graph building formats ~10^5 names): common values need no escaping.
    if not escape and _PLAIN.match(value):
        return value
    out = []
    for position, char in enumerate(value):
        if char in _SAFE and char not in escape and not (position == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out) or "%"


# Names repeat (runs, instruments, bands, visits across detectors): graph building formats
# ~10^5 of them at a time.
sanitize_cached = functools.lru_cache(maxsize=1 << 16)(sanitize)


@dataclass(frozen=True)
class _Slot:
    """A field whose text differs from ref to ref, in a `FileNamer`'s compiled path."""

    source: str
    """``"value"`` (a data id value, by position), ``"implied"`` (by name) or ``"id"``."""
    key: int | str
    spec: str
    escape: str


_Piece = str | tuple[_Slot, ...]
"""Part of a path being assembled: text, or slots joined by ``_`` (one, or all of ``{data_id}``'s)."""


class _NoPlanError(Exception):
    """No compiled path can name this layout of data id: its refs go `FileTemplate.format_directly`."""


_TEXTS: dict[tuple[str, str], dict[DataIdValue, str]] = {}
"""Escaped text of data id values, one cache per (format spec, escaped separator); shared by all
namers, since values (instruments, bands, visits, detectors) repeat across dataset types and runs."""

_MAX_TEXTS = 1 << 17
"""Values one cache keeps at most (emptied when full: values unique to each ref would fill it)."""

_MAX_PLANS = 64
"""Compiled paths one namer keeps (one per layout of data id keys; a program has a few)."""

_GET = dict.__getitem__


def _texts(spec: str, escape: str) -> dict[DataIdValue, str]:
    cache = _TEXTS.get((spec, escape))
    if cache is None:
        cache = _TEXTS[spec, escape] = {}
    return cache


@dataclass(frozen=True, slots=True)
class _Plan:
    """The compiled path of one layout of data id: keys in one order, some implied names present."""

    index: Mapping[str, int]
    """The data id key index this plan is for (held, so its ``id()`` is not reused)."""
    values_of: Callable[[tuple[DataIdValue, ...]], tuple[DataIdValue, ...]] | None
    implied_of: Callable[[Mapping[str, DataIdValue]], tuple[DataIdValue, ...]] | None
    texts: tuple[dict[DataIdValue, str], ...]
    """A cache per value taken, in the order ``values_of`` then ``implied_of`` give them."""
    specs: tuple[tuple[str, str], ...]
    """(format spec, escape) per value taken."""
    id_slot: _Slot | None
    fill: Callable[..., str]
    """The format string's ``format``: value texts, then the id's text."""
    max_chars: int
    """Longest path whose segments surely fit in 255 bytes."""


class FileNamer:
    """Names the files of one dataset type in one run (see `FileTemplate.namer`).

    Calling it with a ref gives exactly `FileTemplate.format`'s path. For each layout of
    data id (keys in one order, the same implied values present) the template is compiled
    once into a format string with the run, the dataset type, the operator variables, the
    extension and dropped optional fields written in; naming a file then takes its data id
    values by position and their escaped text from caches. A value seen for the first
    time is escaped and cached; an empty or missing value, a value that does not fit its
    format spec, or a ref of another run or dataset type goes the general way
    (`FileTemplate.format`'s rules and errors); a path long enough that a segment may
    pass 255 bytes is checked as `FileTemplate.format` checks it.

    Data id values are ``int`` or ``str`` (`DataIdValue`); only those are cached.
    """

    def __init__(self, template: FileTemplate, dataset_type_name: str, run: str,
                 variables: Mapping[str, object], extension: str):
        self.template = template
        self.dataset_type_name = dataset_type_name
        self.run = run
        self.extension = extension
        self._variables = variables
        # Fields an implied value may fill (band for a visit): which are present decides the layout.
        self._maybe_implied = tuple(sorted(template.fields - SPECIAL_FIELDS))
        self._plans: dict[object, _Plan | None] = {}

    def __repr__(self) -> str:
        return f"FileNamer({self.template.text!r}, {self.dataset_type_name!r}, {self.run!r})"

    def __call__(self, ref: DatasetRef) -> str:
        """Return the relative POSIX path of ``ref``'s file (see `FileTemplate.format`)."""
        if ref.run != self.run or ref.dataset_type.name != self.dataset_type_name:
            return self.template.format_directly(ref, self._variables, self.extension)
        index, data_values, implied = ref.data_id.layout()
        # What the data id holds decides the plan: its key index (shared by all data ids with the
        # same keys in the same order, hence id()) and which implied names the template uses it has.
        key: object = id(index)
        if implied and self._maybe_implied:
            key = (key, tuple(map(implied.__contains__, self._maybe_implied)))
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._compile(key, index, implied)
        if plan is None:
            return self.template.format_directly(ref, self._variables, self.extension)
        values: tuple[DataIdValue, ...] = plan.values_of(data_values) if plan.values_of else ()
        if plan.implied_of is not None:
            values += plan.implied_of(implied)
        try:
            if plan.id_slot is None:
                path = plan.fill(*map(_GET, plan.texts, values))
            else:
                path = plan.fill(*map(_GET, plan.texts, values), self._id_text(plan.id_slot, ref))
        except (KeyError, TypeError):  # a value not seen yet (or not hashable)
            texts = self._texts_of(plan, values)
            if texts is None:
                return self.template.format_directly(ref, self._variables, self.extension)
            if plan.id_slot is not None:
                texts.append(self._id_text(plan.id_slot, ref))
            path = plan.fill(*texts)
        if len(path) > plan.max_chars:
            self.template.check_path(path, ref)
        return path

    @staticmethod
    def _id_text(slot: _Slot, ref: DatasetRef) -> str:
        # Ids are unique: escaped (only where a separator escapes "-") without a cache.
        return sanitize(str(ref.id), slot.escape) if slot.escape else str(ref.id)

    @staticmethod
    def _texts_of(plan: _Plan, values: tuple[DataIdValue, ...]) -> list[str] | None:
        """Escaped texts of ``values``, cached; None if one is empty or does not fit its spec."""
        texts = []
        for value, cache, (spec, escape) in zip(values, plan.texts, plan.specs, strict=True):
            if value is None or value == "":
                return None
            try:
                formatted = format(value, spec)
            except (ValueError, TypeError):
                return None
            text = sanitize(formatted, escape)
            # Only ints and strs: an equal value of another type (True, 1.0) may format otherwise.
            if type(value) is int or type(value) is str:
                if len(cache) >= _MAX_TEXTS:
                    cache.clear()
                cache[value] = text
            texts.append(text)
        return texts

    def _compile(self, key: object, index: Mapping[str, int], implied: Mapping[str, DataIdValue]) -> _Plan | None:
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        try:
            plan = self._plan(index, implied)
        except _NoPlanError:
            plan = None
        self._plans[key] = plan
        return plan

    def _plan(self, index: Mapping[str, int], implied: Mapping[str, DataIdValue]) -> _Plan:
        constants = {"run": self.run, "dataset_type": self.dataset_type_name}

        def constant(f: TemplateField, value: object) -> str | None:
            if value is None or value == "":
                if f.optional:
                    return None
                raise _NoPlanError  # the general way raises the error, naming the ref
            try:
                formatted = format(value, f.spec)
            except (ValueError, TypeError):
                raise _NoPlanError from None
            return sanitize(formatted, f.escape)

        def resolve(f: TemplateField) -> _Piece | None:
            name = f.name
            if name in constants:
                return constant(f, constants[name])
            if name == "id":
                if f.spec:
                    raise _NoPlanError  # a spec that may not fit: the general way says so
                return (_Slot("id", "", "", f.escape),)
            if name == "data_id":
                if not index:
                    return None  # no dimensions: dropped, the name is still unique
                if f.spec:
                    raise _NoPlanError
                return tuple(_Slot("value", i, "", f.escape if i == 0 else f.escape + "_") for i in range(len(index)))
            if name in index:
                return (_Slot("value", index[name], f.spec, f.escape),)
            if name in implied:
                return (_Slot("implied", name, f.spec, f.escape),)
            return constant(f, self._variables.get(name))

        pieces = self.template.assemble(resolve)
        slots = [s for p in pieces if not isinstance(p, str) for s in p]
        # Arguments of the format string: data id values, implied values, then the id.
        by_value = [s for s in slots if s.source == "value"]
        by_implied = [s for s in slots if s.source == "implied"]
        id_slot = next((s for s in slots if s.source == "id"), None)
        taken: list[_Slot] = []
        values_of = implied_of = None
        if by_value:
            # itemgetter of one key gives the value, not a 1-tuple: take it twice, use the first.
            keys = [s.key for s in by_value] * (2 if len(by_value) == 1 else 1)
            values_of = operator.itemgetter(*keys)
            taken += by_value * (2 if len(by_value) == 1 else 1)
        if by_implied:
            keys = [s.key for s in by_implied] * (2 if len(by_implied) == 1 else 1)
            implied_of = operator.itemgetter(*keys)
            taken += by_implied * (2 if len(by_implied) == 1 else 1)
        position = {id(s): i for i, s in reversed(list(enumerate(taken)))}
        if id_slot is not None:
            position[id(id_slot)] = len(taken)

        def field(s: _Slot) -> str:
            return f"{{{position[id(s)]}}}"

        text = "".join(
            p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "_".join(map(field, p))
            for p in pieces
        )
        # Where the path's shape is decided: slots are never empty, never start with "." and hold
        # no "/", so checking the literal layout with a slot as "x" checks every path it gives.
        skeleton = "".join(p if isinstance(p, str) else "x" for p in pieces)
        ext = self.extension.removeprefix(".")
        if ext:
            if not skeleton or skeleton.endswith("/"):
                raise _NoPlanError
            suffix = "." + sanitize(ext)
            text += suffix
            skeleton += suffix
        if not skeleton or skeleton.startswith("/") or any(s in ("", ".", "..") for s in skeleton.split("/")):
            raise _NoPlanError
        # Escaped values are ASCII: only the template's own text may take more bytes than characters.
        extra_bytes = len(skeleton.encode("utf-8", "surrogatepass")) - len(skeleton)
        return _Plan(
            index=index, values_of=values_of, implied_of=implied_of,
            texts=tuple(_texts(s.spec, s.escape) for s in taken),
            specs=tuple((s.spec, s.escape) for s in taken),
            id_slot=id_slot, fill=text.format, max_chars=MAX_SEGMENT_BYTES - extra_bytes,
        )


