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
import re
import string
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..config import DEFAULT_TEMPLATE  # the configuration's default; one definition
from ..errors import TemplateError
from ..model import DataId, DatasetRef, DatasetType
from ._file_namer import MAX_SEGMENT_BYTES, SPECIAL_FIELDS, FileNamer, sanitize, sanitize_cached

__all__ = [
    "DEFAULT_TEMPLATE",
    "KNOWN_VARIABLES",
    "SPECIAL_FIELDS",
    "FileNamer",
    "FileTemplate",
    "FileTemplates",
    "TemplateField",
    "sanitize",
]

KNOWN_VARIABLES = frozenset({"reqnum", "attnum", "unitname"})
"""Operator variables every template may use: request number, attempt number, unit name."""

_SEPARATORS = "_/"
# [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(
    r"^(?:(?P<fill>.)?(?P<align>[<>=^]))?(?P<sign>[-+ ])?z?#?0?(?P<width>\d+)?[_,]?"
    r"(?:\.(?P<precision>\d+))?(?P<type>[bcdeEfFgGnosxX%])?$",
    re.DOTALL,
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_MAX_NAMERS = 256
"""Namers one template keeps for `FileTemplate.format` (one per dataset type, run, variables, extension)."""

_SlotT = TypeVar("_SlotT")
"""What `FileTemplate.assemble`'s ``resolve`` may give besides text: a slot standing for a value."""


@dataclass(frozen=True)
class TemplateField:
    """One field of a `FileTemplate`, as `FileTemplate.assemble` hands it to its ``resolve``."""

    name: str
    """The name, without the ``?`` of an optional field."""
    spec: str
    """The format spec (``08d`` in ``{visit:08d}``), or ``""``."""
    optional: bool
    """Whether the field is dropped (with a separator) when it has no value: ``{band?}``."""
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
        self._parts: list[tuple[str, TemplateField | None]] = []
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

    def _parse_field(self, name: str, spec: str, conversion: str | None) -> TemplateField:
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
        return TemplateField(bare, spec, optional)

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

    def _fields(self) -> Iterator[TemplateField]:
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

    def format_directly(self, ref: DatasetRef, variables: Mapping[str, object] | None = None,
                        extension: str = "") -> str:
        """Return the path of ``ref``'s file, everything worked out for this ref alone.

        Any value, any layout of data id: what `format` gives, without compiling a namer.
        A `FileNamer` gives the same path faster when its values are in its caches, and
        comes here for a ref it cannot name from them; this is where every error is raised.

        Parameters
        ----------
        ref
            The dataset; its data id holds every value (implied ones included).
        variables
            Operator variables, as for `format`.
        extension
            Appended to the path, as for `format`.

        Raises
        ------
        TemplateError
            As `format` does.
        """
        data_id = ref.data_id
        lookup: dict[str, object] = {**variables} if variables else {}
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
                sanitize_cached(str(data_id[k]), data_id_escape if i == 0 else data_id_escape + "_")
                for i, k in enumerate(data_id)
            ])

        def resolve(f: TemplateField) -> str | None:
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
            return formatted if f.name == "data_id" and not f.spec else sanitize_cached(formatted, f.escape)

        path = "".join([piece for piece in self.assemble(resolve) if isinstance(piece, str)])
        ext = extension.removeprefix(".")
        if ext and path and not path.endswith("/"):
            # The extension is sanitised (no "/"), so one check of the whole path covers both.
            path = f"{path}.{sanitize_cached(ext)}"
        elif ext:
            self.check_path(path, ref)  # an empty last segment: the check names the problem
        self.check_path(path, ref)
        return path

    def assemble(self, resolve: Callable[[TemplateField], str | _SlotT | None]) -> list[str | _SlotT]:
        """Return the pieces of a path: literal text, and what ``resolve`` gives for each field.

        One drop rule for `format_directly` (``resolve`` gives the text of one ref's value)
        and `FileNamer` (it gives a slot standing for any ref's value).

        Parameters
        ----------
        resolve
            Called with each field in order; gives its piece, or None for a field without
            a value (or raises). A field without a value is dropped with the ``_`` or ``/``
            before it (after it, when nothing comes before). Only literal separators are
            ever dropped, never a value's own ``_``; a piece that is not text is taken to
            stand for text that is never empty.

        Returns
        -------
        list
            Literal texts (``str``) and pieces ``resolve`` gave, in path order.
        """
        out: list[tuple[str | _SlotT, bool]] = []  # (piece, is_literal)
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

    def check_path(self, path: str, ref: DatasetRef) -> None:
        """Check a path this template gave for ``ref``.

        Raises
        ------
        TemplateError
            If ``path`` is empty or has an empty, ``.`` or ``..`` segment, or a segment
            longer than 255 bytes (`MAX_SEGMENT_BYTES`) in UTF-8; the message names ``ref``.
        """
        segments = path.split("/")
        # No empty, "." or ".." segment is exactly "normpath would not change it" for a
        # relative path, without normpath's cost.
        bad = not path or any(s in ("", ".", "..") for s in segments)
        if bad:
            raise TemplateError(f"File template {self.text!r} gave an unsafe path {path!r} for {str(ref)!r}")
        for s in segments:
            # At most 4 bytes per character: short segments need no encoding to check.
            if len(s) * 4 > MAX_SEGMENT_BYTES and len(s.encode("utf-8")) > MAX_SEGMENT_BYTES:
                raise TemplateError(
                    f"File template {self.text!r} gave a path segment longer than {MAX_SEGMENT_BYTES} "
                    f"bytes for {str(ref)!r}: {s[:40]!r}..."
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
