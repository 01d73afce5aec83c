"""File name templates: how a dataset's data id becomes a path under the datastore root.

A template is a Python format string over names (``string.Formatter`` syntax)::

    {run}/{dataset_type}/{band?}/{dataset_type}_{visit:08d}_{detector:03d}

Fields may name

- any data id key, required or implied (``{visit:08d}``, ``{band}``, ``{patch}``);
- the specials ``{run}``, ``{dataset_type}``, ``{id}`` (the dataset id) and ``{data_id}``
  (every data id value, sanitised, joined with ``_`` in dimension order:
  ``HSC_903334_16``);
- operator variables: ``{reqnum}``, ``{attnum}``, ``{unitname}`` or any other name
  given in the ``variables`` mapping when formatting.

A field whose name ends in ``?`` (``{band?}``) is optional: when its value is missing
it is dropped together with the ``_`` or ``/`` right before it (or right after it, when
it starts the template). Every other missing field is an error.

Every substituted value is escaped (see `sanitize`) so that no data id value can leave
the datastore root or break a path, while ordinary punctuation survives (a patch ``8,6``
stays ``8,6``). Escaping is injective: distinct values always give distinct names, so a
template that names every dimension can never give two datasets one file. A run
``u/someone/w_01`` gives the single directory ``u%2Fsomeone%2Fw_01``.

`FileTemplate.namer` gives the function that names many files of one dataset type in one
run (graph building names two per quantum): the same names, the template compiled once.

Repositories written before escaping replaced ``_`` for ``/`` (which could give ``a/b``
and ``a_b`` one name) keep their files where they are: every file's path is stored in
the registry when it is written, and only new writes use the escaped names.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import string
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from ..config import DEFAULT_TEMPLATE  # the configuration's default; one definition
from ..errors import TemplateError
from ..model import DataId, DataIdValue, DatasetRef, DatasetType

__all__ = [
    "DEFAULT_TEMPLATE",
    "KNOWN_VARIABLES",
    "SPECIAL_FIELDS",
    "FileNamer",
    "FileTemplate",
    "FileTemplates",
    "sanitize",
]

SPECIAL_FIELDS = frozenset({"run", "dataset_type", "id", "data_id"})
"""Field names filled from the dataset ref itself rather than from its data id."""

KNOWN_VARIABLES = frozenset({"reqnum", "attnum", "unitname"})
"""Operator variables every template may use: request number, attempt number, unit name."""

# Longest file or directory name most filesystems (and S3 key segments, by convention) accept.
_MAX_SEGMENT_BYTES = 255
_SEPARATORS = "_/"
# [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(
    r"^(?:(?P<fill>.)?(?P<align>[<>=^]))?(?P<sign>[-+ ])?z?#?0?(?P<width>\d+)?[_,]?"
    r"(?:\.(?P<precision>\d+))?(?P<type>[bcdeEfFgGnosxX%])?$",
    re.DOTALL,
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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
_sanitize_cached = functools.lru_cache(maxsize=1 << 16)(sanitize)

_MAX_NAMERS = 256
"""Namers one template keeps for `FileTemplate.format` (one per dataset type, run, variables, extension)."""


@dataclass(frozen=True)
class _Field:
    name: str
    spec: str
    optional: bool
    escape: str = ""
    """Separator to escape in the value: the first character of the literal text between
    this field and the next one in the same path segment."""


class FileTemplate:
    """One file name template, parsed and checked for safety when constructed.

    Parameters
    ----------
    text
        The template, e.g. ``"{run}/{dataset_type}/{band?}/{dataset_type}_{visit:08d}"``.

    Raises
    ------
    TemplateError
        If the text is not a valid template: attribute or index access (``{visit.x}``,
        ``{a[0]}``), conversions (``{band!r}``), positional or nested fields, a bad
        format spec, or literal text that is absolute or has ``..``, ``.`` or empty
        segments.

    Examples
    --------
    >>> t = FileTemplate("{run}/{dataset_type}/{band?}/{dataset_type}_{visit:08d}")
    >>> sorted(t.fields)
    ['band', 'dataset_type', 'run', 'visit']
    """

    def __init__(self, text: str):
        self.text = text
        self._parts: list[tuple[str, _Field | None]] = []
        self._namers: dict[tuple[object, ...], FileNamer] = {}
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as err:
            raise TemplateError(f"File template {text!r} is not a valid format string: {err}") from None
        for literal, name, spec, conversion in parsed:
            if literal:
                self._parts.append((literal, None))
            if name is None:
                continue
            self._parts.append(("", self._parse_field(name, spec or "", conversion)))
        if not any(f is not None for _, f in self._parts):
            raise TemplateError(f"File template {text!r} has no fields, so it would name one file only")
        self._names = frozenset(f.name for _, f in self._parts if f is not None)
        self._check_literal_layout()
        self._set_escapes()

    def _set_escapes(self) -> None:
        # In "{band}_{visit}" a band "a_1" and visit 2 would give the name of band "a" and visit
        # "1_2": a value followed by another in the same segment escapes the separator between them.
        # The dataset type's name is fixed for all its files and stays readable.
        for i, (_, f) in enumerate(self._parts):
            if f is None or f.name == "dataset_type":
                continue
            between = ""
            for literal, following in self._parts[i + 1 :]:
                if following is not None:
                    if between and "/" not in between:
                        self._parts[i] = ("", dataclasses.replace(f, escape=between[0]))
                    break
                between += literal

    def _parse_field(self, name: str, spec: str, conversion: str | None) -> _Field:
        where = f"in file template {self.text!r}"
        if conversion is not None:
            raise TemplateError(f"Conversion '!{conversion}' on field {name!r} {where} is not allowed")
        optional = name.endswith("?")
        bare = name[:-1] if optional else name
        if "." in bare or "[" in bare:
            raise TemplateError(f"Attribute or index access in field {{{name}}} {where} is not allowed")
        if not _NAME.match(bare):
            raise TemplateError(f"Field {{{name}}} {where} is not a name (positional fields are not allowed)")
        if "{" in spec or "}" in spec:
            raise TemplateError(f"Nested fields in the format spec of {{{name}}} {where} are not allowed")
        if not _FORMAT_SPEC.match(spec):
            raise TemplateError(f"Format spec {spec!r} of field {{{name}}} {where} is not valid")
        return _Field(bare, spec, optional)

    def _check_literal_layout(self) -> None:
        # Check the shape the literal text gives the path, with each field standing in for
        # a value; values themselves are sanitised and can add no separators.
        skeleton = "".join(lit if f is None else "x" for lit, f in self._parts)
        if skeleton.startswith("/") or "\\" in skeleton or "\0" in skeleton:
            raise TemplateError(f"File template {self.text!r} must be a relative POSIX path")
        for segment in skeleton.split("/"):
            if segment in ("", ".", ".."):
                raise TemplateError(
                    f"File template {self.text!r} has a {segment or 'empty'!r} segment; "
                    "paths must stay inside the datastore root"
                )

    def __repr__(self) -> str:
        return f"FileTemplate({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileTemplate) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def _fields(self) -> Iterator[_Field]:
        return (f for _, f in self._parts if f is not None)

    @property
    def fields(self) -> frozenset[str]:
        """Names of all fields, optional ones included (without their ``?``)."""
        return frozenset(f.name for f in self._fields())

    @property
    def required_fields(self) -> frozenset[str]:
        """Names of the fields that must have a value."""
        return frozenset(f.name for f in self._fields() if not f.optional)

    def validate(
        self,
        dataset_type: DatasetType,
        available: Collection[str],
        *,
        variables: Collection[str] = (),
    ) -> None:
        """Check that the template gives unique, fillable names for ``dataset_type``.

        Called when a template is configured, so a bad one fails then rather than when
        two files collide.

        Parameters
        ----------
        dataset_type
            The dataset type the template will name files for.
        available
            Data id keys that will have values: its dimensions and their implied
            dimensions (``band`` for ``visit``).
        variables
            Operator variable names, beyond `KNOWN_VARIABLES`, that will be supplied.

        Raises
        ------
        TemplateError
            If a dimension of the dataset type is not a field (and neither ``{id}`` nor
            ``{data_id}`` is), if neither ``{run}`` nor ``{id}`` is a field, if a field
            names nothing that will have a value, or if a dimension field truncates its
            value with a precision.

        Notes
        -----
        Optional fields (``{band?}``) may name keys that are not available: they are
        then always dropped, which lets one template serve many dataset types.
        """
        where = f"File template {self.text!r} for dataset type {dataset_type.name!r}"
        fields = self.fields
        known = set(available) | set(dataset_type.dimensions) | SPECIAL_FIELDS | KNOWN_VARIABLES | set(variables)
        unknown = sorted(self.required_fields - known)
        if unknown:
            raise TemplateError(
                f"{where} uses {{{unknown[0]}}}, which is neither a data id key "
                f"({', '.join(sorted(available)) or 'none'}) "
                f"nor one of {', '.join(sorted(SPECIAL_FIELDS | KNOWN_VARIABLES | set(variables)))}"
            )
        if "run" not in fields and "id" not in fields:
            raise TemplateError(f"{where} cannot give unique names: it needs {{run}} or {{id}}")
        if "id" not in fields and "data_id" not in fields:
            missing = [d for d in dataset_type.dimensions if d not in fields]
            if missing:
                raise TemplateError(
                    f"{where} cannot give unique names: dimension {missing[0]!r} is not a field "
                    "(add it, or {data_id} or {id})"
                )
        identifying = set(dataset_type.dimensions) | {"run", "id", "data_id"}
        for (_, before), (_, after) in zip(self._parts, self._parts[1:], strict=False):
            if before is not None and after is not None and {before.name, after.name} <= identifying:
                raise TemplateError(
                    f"{where} cannot give unique names: {{{before.name}}} and {{{after.name}}} touch "
                    "(1 and 23 would read as 12 and 3); put a separator between them"
                )
        for f in self._fields():
            match = _FORMAT_SPEC.match(f.spec)
            if f.name in identifying and match and match["precision"] is not None:
                raise TemplateError(
                    f"{where} cannot give unique names: the precision in {{{f.name}:{f.spec}}} truncates values"
                )

    def format(
        self,
        ref: DatasetRef,
        *,
        values: Mapping[str, object] | None = None,
        variables: Mapping[str, object] | None = None,
        extension: str = "",
    ) -> str:
        """Return the relative POSIX path of ``ref``'s file.

        Parameters
        ----------
        ref
            The dataset; gives ``run``, ``dataset_type``, ``id`` and ``data_id``.
        values
            Data id values, implied ones included (``band`` for a visit), laid over
            ``ref.data_id.full``; needed only when the data id is not expanded.
        variables
            Operator variables (``reqnum``, ``attnum``, ``unitname``, ...). Data id values
            win over variables of the same name; specials win over both.
        extension
            Appended to the path, e.g. ``".fits"`` (a leading dot is added if missing).

        Returns
        -------
        str
            A normalised, relative path with no ``..``, ``.`` or empty segment.

        Raises
        ------
        TemplateError
            If a required field has no value (the message names the field, the dataset
            type and the values available), a value does not fit its format spec, or a
            path segment would be longer than 255 bytes.

        Notes
        -----
        To name many files of one dataset type in one run, `namer` gives the same names
        several times faster; this method keeps a few namers to call.

        Examples
        --------
        >>> import uuid
        >>> from skybutler.model import DataId, DatasetRef, DatasetType
        >>> dt = DatasetType("calexp", ("instrument", "visit", "detector"), "image")
        >>> ref = DatasetRef(uuid.UUID(int=1), dt, DataId(instrument="HSC", visit=903334, detector=16), "RC2")
        >>> FileTemplate("{run}/{dataset_type}/{band?}/{dataset_type}_{visit:08d}").format(
        ...     ref, values={"band": "r"}, extension=".fits")
        'RC2/calexp/r/calexp_00903334.fits'
        """
        if values:
            ref = DatasetRef(ref.id, ref.dataset_type, _overlay(ref.data_id, values), ref.run)
        try:
            key = (ref.dataset_type.name, ref.run, extension, tuple(variables.items()) if variables else ())
            namer = self._namers.get(key)
        except TypeError:  # an unhashable variable: named without a kept namer
            return self.namer(ref.dataset_type, ref.run, variables=variables, extension=extension)(ref)
        if namer is None:
            if len(self._namers) >= _MAX_NAMERS:
                self._namers.clear()
            namer = self._namers[key] = self.namer(ref.dataset_type, ref.run, variables=variables,
                                                   extension=extension)
        return namer(ref)

    def namer(
        self,
        dataset_type: DatasetType,
        run: str,
        *,
        variables: Mapping[str, object] | None = None,
        extension: str = "",
    ) -> FileNamer:
        """Return a function that names the files of ``dataset_type`` in ``run``, as `format` does.

        What is the same for every file (the run, the dataset type, the variables, the
        extension, which data id value goes where) is worked out once; naming one file then
        looks its data id values up in caches of their escaped text.

        Parameters
        ----------
        dataset_type
            The dataset type of the refs that will be named.
        run
            Their run.
        variables
            Operator variables, as for `format` (copied: later changes are not seen).
        extension
            Appended to every path, as for `format`.

        Examples
        --------
        >>> import uuid
        >>> from skybutler.model import DataId, DatasetRef, DatasetType
        >>> dt = DatasetType("calexp", ("instrument", "visit", "detector"), "image")
        >>> name = FileTemplate("{run}/{dataset_type}_{visit:08d}_{detector:03d}").namer(dt, "RC2", extension="fits")
        >>> name(DatasetRef(uuid.UUID(int=1), dt, DataId(instrument="HSC", visit=903334, detector=16), "RC2"))
        'RC2/calexp_00903334_016.fits'
        """
        return FileNamer(self, dataset_type.name, run, dict(variables or {}), extension)

    def _path(self, ref: DatasetRef, variables: Mapping[str, object], extension: str) -> str:
        """The path of ``ref``'s file, everything worked out for this ref alone (any value, any layout).

        `FileNamer` gives the same path faster when its values are in its caches; this is
        where every error is raised.
        """
        data_id = ref.data_id
        lookup: dict[str, object] = {**variables}
        lookup.update(data_id.full)
        lookup["run"] = ref.run
        lookup["dataset_type"] = ref.dataset_type.name
        names = self._names
        if "id" in names:
            lookup["id"] = str(ref.id)
        if "data_id" in names:
            # The values are joined with "_": all but the first escape it (where each starts is then
            # unambiguous), so the first keeps its own readable (a skymap "hsc_rings_v1").
            data_id_escape = next((f.escape for f in self._fields() if f.name == "data_id"), "")
            lookup["data_id"] = "_".join([
                _sanitize_cached(str(data_id[k]), data_id_escape if i == 0 else data_id_escape + "_")
                for i, k in enumerate(data_id)
            ])

        def resolve(f: _Field) -> str | None:
            value = lookup.get(f.name)
            if value is None or value == "":
                # A dataset type without dimensions (a run's task configuration) has an empty
                # {data_id}: it is dropped like an optional field, its name is still unique.
                if not f.optional and not (f.name == "data_id" and not len(data_id)):
                    raise TemplateError(
                        f"File template {self.text!r} needs {{{f.name}}} for dataset type "
                        f"{ref.dataset_type.name!r}, but it has no value; available: "
                        + ", ".join(f"{k}={v!r}" for k, v in lookup.items() if v is not None)
                    )
                return None
            try:
                formatted = format(value, f.spec)
            except (ValueError, TypeError) as err:
                raise TemplateError(
                    f"Value {value!r} of {{{f.name}}} does not fit format spec {f.spec!r} "
                    f"in file template {self.text!r}: {err}"
                ) from None
            # {data_id} is escaped value by value above; a format spec's fill could add anything.
            return formatted if f.name == "data_id" and not f.spec else _sanitize_cached(formatted, f.escape)

        path = "".join([piece for piece in self._assemble(resolve) if isinstance(piece, str)])
        ext = extension.removeprefix(".")
        if ext and path and not path.endswith("/"):
            # The extension is sanitised (no "/"), so one check of the whole path covers both.
            path = f"{path}.{_sanitize_cached(ext)}"
        elif ext:
            self._check_path(path, ref)  # an empty last segment: the check names the problem
        self._check_path(path, ref)
        return path

    def _assemble(self, resolve: Callable[[_Field], _Piece | None]) -> list[_Piece]:
        """The pieces of a path: literal text, and what ``resolve`` gives for each field.

        ``resolve`` gives None for a field without a value (or raises): the field is then
        dropped with the ``_`` or ``/`` before it (after it, when nothing comes before).
        Only literal separators are ever dropped, never a value's own ``_``. One drop
        rule for `_path` (values of one ref) and `FileNamer` (values standing for any ref).
        """
        out: list[tuple[_Piece, bool]] = []  # (piece, is_literal)
        drop_next_separator = False
        for literal, f in self._parts:
            if f is None:
                if drop_next_separator and literal[0] in _SEPARATORS:
                    literal = literal[1:]
                drop_next_separator = False
                out.append((literal, True))
                continue
            piece = resolve(f)
            if piece is None:
                last, is_literal = out[-1] if out else ("", True)
                if is_literal and isinstance(last, str) and last and last[-1] in _SEPARATORS:
                    out[-1] = (last[:-1], True)
                elif not any(p for p, _ in out):  # a slot is never empty
                    drop_next_separator = True
                continue
            drop_next_separator = False
            out.append((piece, False))
        return [p for p, _ in out]

    def _check_path(self, path: str, ref: DatasetRef) -> None:
        segments = path.split("/")
        # No empty, "." or ".." segment is exactly "normpath would not change it" for a
        # relative path, without normpath's cost.
        bad = not path or any(s in ("", ".", "..") for s in segments)
        if bad:
            raise TemplateError(f"File template {self.text!r} gave an unsafe path {path!r} for {str(ref)!r}")
        for s in segments:
            # At most 4 bytes per character: short segments need no encoding to check.
            if len(s) * 4 > _MAX_SEGMENT_BYTES and len(s.encode("utf-8")) > _MAX_SEGMENT_BYTES:
                raise TemplateError(
                    f"File template {self.text!r} gave a path segment longer than {_MAX_SEGMENT_BYTES} "
                    f"bytes for {str(ref)!r}: {s[:40]!r}..."
                )


@dataclass(frozen=True)
class _Slot:
    """A field whose text differs from ref to ref, in a `FileNamer`'s compiled path."""

    source: str
    """``"value"`` (a data id value, by position), ``"implied"`` (by name) or ``"id"``."""
    key: int | str
    spec: str
    escape: str


_Piece = str | _Slot | tuple[_Slot, ...]
"""Part of a path being assembled: text, a slot, or slots joined by ``_`` (``{data_id}``)."""


class _NoPlanError(Exception):
    """This layout of data id cannot be named by a compiled path: every such ref goes `FileTemplate._path`."""


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
        self._maybe_implied = tuple(sorted({f.name for f in template._fields()} - SPECIAL_FIELDS))
        self._plans: dict[object, _Plan | None] = {}

    def __repr__(self) -> str:
        return f"FileNamer({self.template.text!r}, {self.dataset_type_name!r}, {self.run!r})"

    def __call__(self, ref: DatasetRef) -> str:
        """Return the relative POSIX path of ``ref``'s file (see `FileTemplate.format`)."""
        if ref.run != self.run or ref.dataset_type.name != self.dataset_type_name:
            return self.template._path(ref, self._variables, self.extension)
        data_id = ref.data_id
        index = data_id._index
        implied = data_id._implied
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
            return self.template._path(ref, self._variables, self.extension)
        values: tuple[DataIdValue, ...] = plan.values_of(data_id._values) if plan.values_of else ()
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
                return self.template._path(ref, self._variables, self.extension)
            if plan.id_slot is not None:
                texts.append(self._id_text(plan.id_slot, ref))
            path = plan.fill(*texts)
        if len(path) > plan.max_chars:
            self.template._check_path(path, ref)
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

        def constant(f: _Field, value: object) -> str | None:
            if value is None or value == "":
                if f.optional:
                    return None
                raise _NoPlanError  # the general way raises the error, naming the ref
            try:
                formatted = format(value, f.spec)
            except (ValueError, TypeError):
                raise _NoPlanError from None
            return sanitize(formatted, f.escape)

        def resolve(f: _Field) -> _Piece | None:
            name = f.name
            if name in constants:
                return constant(f, constants[name])
            if name == "id":
                if f.spec:
                    raise _NoPlanError  # a spec that may not fit: the general way says so
                return _Slot("id", "", "", f.escape)
            if name == "data_id":
                if not index:
                    return None  # no dimensions: dropped, the name is still unique
                if f.spec:
                    raise _NoPlanError
                return tuple(_Slot("value", i, "", f.escape if i == 0 else f.escape + "_") for i in range(len(index)))
            if name in index:
                return _Slot("value", index[name], f.spec, f.escape)
            if name in implied:
                return _Slot("implied", name, f.spec, f.escape)
            return constant(f, self._variables.get(name))

        pieces = self.template._assemble(resolve)
        slots = [s for p in pieces if not isinstance(p, str) for s in (p if isinstance(p, tuple) else (p,))]
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
            p.replace("{", "{{").replace("}", "}}") if isinstance(p, str)
            else field(p) if isinstance(p, _Slot) else "_".join(map(field, p))
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
            id_slot=id_slot, fill=text.format, max_chars=_MAX_SEGMENT_BYTES - extra_bytes,
        )


def _overlay(data_id: DataId, values: Mapping[str, object]) -> DataId:
    """``data_id`` with ``values`` laid over it: for its own keys, and as implied values for others."""
    required = data_id.required_items
    merged = {k: values.get(k, v) for k, v in required.items()}
    implied = {**data_id.implied, **{k: v for k, v in values.items() if k not in required}}
    return DataId(merged, implied=implied)  # type: ignore[arg-type]


class FileTemplates:
    """The templates of one repository: a default, per dataset type, and per run.

    Parameters
    ----------
    default
        Used when nothing more specific applies; see `DEFAULT_TEMPLATE`.
    per_dataset_type
        Template text by dataset type name.
    per_run
        By run name, template text by dataset type name; the key ``"default"`` applies
        to every dataset type of that run without its own entry.

    Examples
    --------
    >>> templates = FileTemplates(
    ...     per_dataset_type={"calexp": "{run}/calexp/{band}/calexp_{visit:08d}_{detector:03d}"},
    ...     per_run={"RC2/w_01": {"default": "{run}/{reqnum}/{dataset_type}_{data_id}"}},
    ... )
    >>> templates.template_for("calexp", "RC2/w_02").text
    '{run}/calexp/{band}/calexp_{visit:08d}_{detector:03d}'
    >>> templates.template_for("calexp", "RC2/w_01").text
    '{run}/{reqnum}/{dataset_type}_{data_id}'
    """

    def __init__(
        self,
        default: str = DEFAULT_TEMPLATE,
        per_dataset_type: Mapping[str, str] | None = None,
        per_run: Mapping[str, Mapping[str, str]] | None = None,
    ):
        self.default = FileTemplate(default)
        self.per_dataset_type = {k: FileTemplate(v) for k, v in (per_dataset_type or {}).items()}
        self.per_run = {
            run: {k: FileTemplate(v) for k, v in by_type.items()} for run, by_type in (per_run or {}).items()
        }

    def __repr__(self) -> str:
        return (
            f"FileTemplates(default={self.default.text!r}, "
            f"per_dataset_type={ {k: v.text for k, v in self.per_dataset_type.items()} !r}, "
            f"per_run={ {r: {k: v.text for k, v in m.items()} for r, m in self.per_run.items()} !r})"
        )

    def template_for(self, dataset_type_name: str, run: str) -> FileTemplate:
        """Return the template for a dataset type in a run.

        A run-level entry for the dataset type wins, then the run's ``"default"``, then
        the dataset type's own template, then the repository default.
        """
        by_run = self.per_run.get(run, {})
        for candidate in (
            by_run.get(dataset_type_name),
            by_run.get("default"),
            self.per_dataset_type.get(dataset_type_name),
        ):
            if candidate is not None:
                return candidate
        return self.default

    def validate(
        self,
        dataset_type: DatasetType,
        available: Collection[str],
        *,
        variables: Collection[str] = (),
    ) -> None:
        """Validate every template that could name files of ``dataset_type``, in any run.

        See `FileTemplate.validate`; raises `TemplateError` for the first bad one.
        """
        candidates = {self.template_for(dataset_type.name, run) for run in self.per_run}
        candidates.add(self.template_for(dataset_type.name, run=""))  # a run without overrides
        for template in sorted(candidates, key=str):
            template.validate(dataset_type, available, variables=variables)
