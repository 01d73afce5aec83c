"""Typed repository configuration: one YAML file per repository.

The file ``skybutler.yaml`` at the repository root is read once into a
`RepositoryConfig`. Environment variables override single values by one rule:
``SKYBUTLER_<SECTION>_<KEY>`` (e.g. ``SKYBUTLER_REGISTRY_DB``,
``SKYBUTLER_DATASTORE_CHECKSUM``); nothing else in skybutler reads the
environment for configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, RepositoryNotFoundError

CONFIG_FILE = "skybutler.yaml"

DEFAULT_TEMPLATE = "{run}/{dataset_type}/{dataset_type}_{data_id}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class RepositoryConfig(_Section):
    """The whole configuration of one repository; its YAML form reproduces it."""

    registry: RegistryConfig = Field(default_factory=lambda: RegistryConfig())
    datastore: DatastoreConfig = Field(default_factory=lambda: DatastoreConfig())
    templates: TemplatesConfig = Field(default_factory=lambda: TemplatesConfig())
    formats: FormatsConfig = Field(default_factory=lambda: FormatsConfig())
    pipelines: PipelinesConfig = Field(default_factory=lambda: PipelinesConfig())

    def to_yaml(self) -> str:
        """The configuration as YAML, exactly as it would be written to ``skybutler.yaml``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "configuration") -> RepositoryConfig:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"Invalid {source}: {problems}") from None

    @classmethod
    def read(cls, root: str | Path, *, environ: Mapping[str, str] | None = None) -> RepositoryConfig:
        """Read ``<root>/skybutler.yaml`` and apply environment overrides."""
        path = Path(root) / CONFIG_FILE
        if not path.is_file():
            raise RepositoryNotFoundError(
                f"{root} is not a skybutler repository (no {CONFIG_FILE}); create one with `skybutler create {root}`"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        return cls.from_mapping(apply_environment(data, os.environ if environ is None else environ), source=str(path))

    def write(self, root: str | Path) -> None:
        path = Path(root) / CONFIG_FILE
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(self.to_yaml())
        os.replace(tmp, path)


def apply_environment(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``SKYBUTLER_<SECTION>_<KEY>=value`` overrides (value parsed as YAML scalar)."""
    result = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    sections = RepositoryConfig.model_fields
    for name, raw in environ.items():
        if not name.startswith("SKYBUTLER_"):
            continue
        rest = name[len("SKYBUTLER_"):].lower()
        for section in sections:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                section_model = sections[section].annotation
                if key not in getattr(section_model, "model_fields", {}):
                    raise ConfigError(f"Environment variable {name}: {section} has no setting {key!r}")
                result.setdefault(section, {})[key] = yaml.safe_load(raw) if raw else raw
                break
    return result
