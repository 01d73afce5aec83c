"""Typed repository configuration: one YAML file per repository.

The file ``skybutler.yaml`` at the repository root is read once into a
`RepositoryConfig`. Environment variables override single values by one rule:
``SKYBUTLER_<SECTION>_<KEY>`` (e.g. ``SKYBUTLER_REGISTRY_DB``,
``SKYBUTLER_DATASTORE_CHECKSUM``); a mapping value (``SKYBUTLER_DATASTORE_STORAGE_OPTIONS``
as JSON) is merged over the file's. Nothing else in skybutler reads the environment for
configuration, and a process that starts workers hands them the configuration it
resolved, so an override means the same thing in every process.

Secrets (storage option keys named like `SECRET_NAMES`, passwords in database URLs)
are replaced by ``***`` in every printed form (`RepositoryConfig.to_yaml`, reprs, error
messages); only `RepositoryConfig.write` keeps them, in a file readable by its owner only.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, FileAccessError, RepositoryNotFoundError

CONFIG_FILE = "skybutler.yaml"

DEFAULT_TEMPLATE = "{run}/{dataset_type}/{dataset_type}_{data_id}"
"""The template used when an operator sets none.

One directory per run and dataset type, and a file name that repeats the dataset type
and lists the data id values in dimension order, e.g.
``HSC_runs_RC2/calexp/calexp_HSC_903334_16.fits``. It gives unique names for every
dataset type (``{data_id}`` covers all its dimensions) and needs no knowledge of the
dimension universe, so it is valid for any dataset type.
"""

#: Option names whose values are secrets (also with a prefix: ``aws_secret_access_key``).
SECRET_NAMES = ("key", "secret", "password", "token", "access_key_id", "secret_access_key", "session_token")
REDACTED = "***"

_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]*@")
_SECRET_ASSIGNMENT = re.compile(  # key=value, 'key': 'value', key: value in free text
    r"""(?i)(['"]?\b(?:\w*_)?(?:""" + "|".join(SECRET_NAMES) + r""")['"]?\s*[:=]\s*)('[^']*'|"[^"]*"|[^\s,;}'"]+)""")


def is_secret_name(name: object) -> bool:
    """Whether an option called ``name`` holds a secret (``secret``, ``aws_session_token``, ...)."""
    if not isinstance(name, str):
        return False
    name = name.lower()
    return any(name == s or name.endswith("_" + s) for s in SECRET_NAMES)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``postgresql://me:***@host/db``)."""
    return _URL_PASSWORD.sub(rf"\1{REDACTED}@", url)


def redact_value(value: Any, name: object = None) -> Any:
    """A copy of ``value`` with secrets replaced: values of secret-named keys at any depth, URL passwords."""
    if is_secret_name(name) and value not in (None, ""):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: redact_value(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def redact_text(text: str) -> str:
    """Free text (an error message, a log) with URL passwords and ``secret=...`` style values hidden."""
    return _SECRET_ASSIGNMENT.sub(rf"\1{REDACTED}", redact_url(text))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Reprs end up in logs and tracebacks: never show a secret there.
        for name, value in super().__repr_args__():
            yield name, _redact_setting(name, value)


def _redact_setting(name: str | None, value: Any) -> Any:
    """Where secrets live: anywhere in fsspec's storage options, and the password of a database URL."""
    if name == "storage_options":
        return redact_value(value)
    if name in ("db", "root") and isinstance(value, str):
        return redact_url(value)
    return value


class RegistryConfig(_Section):
    """Where the registry database lives."""

    db: str = Field("sqlite:///registry.sqlite3", description="SQLAlchemy URL; a relative SQLite path is under the root")
    namespace: str | None = Field(None, description="PostgreSQL schema holding this repository's tables")
    sync_every_commit: bool = Field(
        False, description="SQLite: fsync on every commit (survives power loss; slower). WAL mode always survives a killed process."
    )


class DatastoreConfig(_Section):
    """Where files live and how they are checked."""

    root: str = Field(".", description="Path or URL (file://, s3://bucket/prefix, memory://name); relative to the repository root")
    checksum: str = Field("md5", description="hashlib algorithm for file checksums, or 'none'")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options (e.g. S3 endpoint_url)")
    verify_on_read: bool = Field(False, description=(
        "get compares each file's checksum with the registry's (hashed while reading; "
        "ChecksumMismatchError if it differs)"))


class TemplatesConfig(_Section):
    """Output file name templates (see `skybutler.datastore.FileTemplate`)."""

    default: str = DEFAULT_TEMPLATE
    dataset_types: dict[str, str] = Field(default_factory=dict)
    runs: dict[str, dict[str, str]] = Field(default_factory=dict)


class FormatsConfig(_Section):
    """File formats by storage class and dataset type."""

    allow_pickle: bool = Field(False, description="Allow the pickle format (unpickling executes code)")
    storage_classes: dict[str, str] = Field(default_factory=dict, description="storage class -> default format")
    dataset_types: dict[str, str] = Field(default_factory=dict, description="dataset type -> format")


class PipelinesConfig(_Section):
    """Limits for building quantum graphs against this repository."""

    max_quanta: int = Field(1_000_000, ge=1, description=(
        "Refuse a graph with more quanta unless forced (a mistyped where is the usual cause)"))


def read_yaml_file(path: str | Path) -> tuple[str, Any]:
    """The text of a YAML file and what it holds; every problem one line naming the file.

    The one reader of YAML files a user writes (repository configurations, campaigns).

    Raises
    ------
    ConfigError
        Not UTF-8, not YAML (the line and column named), or nested too deeply.
    FileAccessError
        The file cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid YAML: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise FileAccessError(exc.errno or errno.EIO, f"Cannot read {path}: {exc.strerror or exc}") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:  # pathologically nested flow collections
        raise ConfigError(f"{path} is not valid YAML: nested too deeply") from None


class RepositoryConfig(_Section):
    """The whole configuration of one repository; its YAML form reproduces it (secrets aside)."""

    registry: RegistryConfig = Field(default_factory=lambda: RegistryConfig())
    datastore: DatastoreConfig = Field(default_factory=lambda: DatastoreConfig())
    templates: TemplatesConfig = Field(default_factory=lambda: TemplatesConfig())
    formats: FormatsConfig = Field(default_factory=lambda: FormatsConfig())
    pipelines: PipelinesConfig = Field(default_factory=lambda: PipelinesConfig())

    def to_yaml(self, *, secrets: bool = False) -> str:
        """The configuration as YAML, as ``skybutler.yaml`` holds it.

        Parameters
        ----------
        secrets
            Keep secrets (only for writing the file); by default they are shown as ``***``.
        """
        data = self.model_dump(mode="json") if secrets else self._redacted_data()
        return yaml.safe_dump(data, sort_keys=False)

    def _redacted_data(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        return {section: {k: _redact_setting(k, v) for k, v in values.items()} for section, values in data.items()}

    def redacted(self) -> RepositoryConfig:
        """A copy with every secret replaced by ``***`` (what printed forms show)."""
        return type(self).model_validate(self._redacted_data())

    @property
    def holds_secrets(self) -> bool:
        """Whether any value is a secret (then the file is written readable by its owner only)."""
        return self.redacted() != self

    def with_environment(self, environ: Mapping[str, str] | None = None) -> RepositoryConfig:
        """This configuration with ``SKYBUTLER_<SECTION>_<KEY>`` overrides applied (default: `os.environ`)."""
        env = os.environ if environ is None else environ
        return self.from_mapping(apply_environment(self.model_dump(mode="json"), env),
                                 source="configuration with environment overrides")

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "configuration") -> RepositoryConfig:
        """Validate a mapping of sections; any problem is one `ConfigError` line naming ``source`` and the keys."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"Invalid {source}: expected a mapping of sections ({', '.join(cls.model_fields)}), "
                f"got {_kind(data)}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = [_problem(err) for err in exc.errors()]
            more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise ConfigError(f"Invalid {source}: {'; '.join(problems[:3])}{more}") from None

    @classmethod
    def read(cls, root: str | Path, *, environ: Mapping[str, str] | None = None) -> RepositoryConfig:
        """Read ``<root>/skybutler.yaml`` and apply environment overrides."""
        path = Path(root) / CONFIG_FILE
        if not path.is_file():
            raise RepositoryNotFoundError(
                f"{root} is not a skybutler repository (no {CONFIG_FILE}); create one with `skybutler create {root}`"
            )
        return cls.from_file(path, environ=os.environ if environ is None else environ)

    @classmethod
    def from_file(cls, path: str | Path, *, environ: Mapping[str, str] | None = None) -> RepositoryConfig:
        """Read a configuration file (``skybutler.yaml``, or any YAML with some of its sections).

        The one reader of configuration files: a repository's own file and the file given
        to `skybutler.Butler.create` (``skybutler create --config``) are read alike, and
        the output of ``skybutler config show`` is such a file.

        Parameters
        ----------
        path
            The YAML file; an empty file is the default configuration.
        environ
            Environment whose ``SKYBUTLER_<SECTION>_<KEY>`` overrides are applied; none by default.

        Raises
        ------
        ConfigError
            If the file is not YAML, not a mapping of sections, or holds an unknown or invalid
            setting (one line naming the file and the keys).
        FileAccessError
            If the file cannot be read.
        """
        path = Path(path)
        _, data = read_yaml_file(path)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(cls.model_fields)}), "
                              f"got {_kind(data)}")
        if environ:
            data = apply_environment(data, environ)
        return cls.from_mapping(data, source=str(path))

    def write(self, root: str | Path) -> None:
        """Write ``<root>/skybutler.yaml`` atomically; readable by its owner only when it holds a secret."""
        path = Path(root) / CONFIG_FILE
        # Created with its final mode (never chmod-ed after: there would be a moment it is readable).
        mode = 0o600 if self.holds_secrets else 0o666  # 0o666 minus the umask, as any new file
        tmp = path.with_name(f".{CONFIG_FILE}.{uuid.uuid4().hex[:12]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_yaml(secrets=True))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _kind(value: Any) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def _problem(err: Mapping[str, Any]) -> str:
    """One pydantic error as ``key.path: problem`` (values of secret keys never shown)."""
    loc = [str(p) for p in err["loc"]]
    # A key that is not a plain word is shown quoted, so that one holding a line break or
    # dots cannot split the message or pass for a path.
    where = ".".join(p if p and p.isprintable() and not any(c in p for c in ". ") else repr(p) for p in loc) \
        or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key"
    if kind == "model_type":
        return f"{where}: expected a mapping, got {_kind(err.get('input'))}"
    if kind == "dict_type":
        return f"{where}: expected a mapping, got {_kind(err.get('input'))}"
    if kind == "invalid_key":
        return f"{where}: keys must be strings"
    msg = str(err["msg"]).replace("Input should be", "should be")
    value = err.get("input")
    if (isinstance(value, (str, int, float, bool)) and not any(is_secret_name(p) for p in loc)
            and len(repr(value)) <= 60):
        msg += f" (got {redact_url(value) if isinstance(value, str) else value!r})"
    return f"{where}: {msg}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def _merge(base: Any, override: Any) -> Any:
    """``override`` over ``base``: mappings merged key by key (at any depth), anything else replaced."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base.get(k), v)
        return out
    return override


def apply_environment(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``SKYBUTLER_<SECTION>_<KEY>=value`` overrides.

    The value is parsed as YAML (so JSON works too); a mapping is merged over the
    file's mapping (``SKYBUTLER_DATASTORE_STORAGE_OPTIONS='{"profile": "survey"}'``
    keeps the file's ``endpoint_url``), anything else replaces the file's value.
    """
    result = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    sections = RepositoryConfig.model_fields
    for name, raw in sorted(environ.items()):
        if not name.startswith("SKYBUTLER_"):
            continue
        rest = name[len("SKYBUTLER_"):].lower()
        for section in sections:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                section_model = sections[section].annotation
                if key not in getattr(section_model, "model_fields", {}):
                    raise ConfigError(f"Environment variable {name}: {section} has no setting {key!r}")
                try:
                    value = yaml.safe_load(raw) if raw else raw
                except yaml.YAMLError as exc:
                    raise ConfigError(f"Environment variable {name} is not valid YAML/JSON: "
                                      f"{_yaml_problem(exc)}") from None
                current = result.get(section)
                if current is None:
                    current = result[section] = {}
                if isinstance(current, dict):  # otherwise validation reports the section itself
                    current[key] = _merge(current.get(key), value)
                break
    return result
