from __future__ import annotations

import enum


class CollectionType(enum.Enum):
    """The kinds of collection; values are stored in the registry and never change."""

    RUN = "RUN"
    """Where datasets are written; every dataset belongs to exactly one run."""

    TAGGED = "TAGGED"
    """A hand-picked set of datasets from any runs, at most one per dataset type and data id."""

    CHAINED = "CHAINED"
    """An ordered list of other collections, searched in order (first match wins)."""

    CALIBRATION = "CALIBRATION"
    """Datasets certified over validity ranges of time, looked up by a time."""
