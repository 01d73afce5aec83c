"""The choices of the transfer options, in a module that imports nothing.

`skybutler ingest --help` and `skybutler transfer --help` list them; defined here, the
help does not import the datastore or the transfer code (a second of start-up) to show
six words. The modules that act on them import them from here.
"""

from __future__ import annotations

__all__ = ["INGEST_TRANSFER_MODES", "TRANSFER_CHOICES", "TRANSFER_SCOPES"]

INGEST_TRANSFER_MODES = ("auto", "copy", "move", "hardlink", "symlink", "direct")
"""How `Butler.ingest` brings a file in (``auto``: copy from elsewhere, ``direct`` when inside the root)."""

TRANSFER_CHOICES = ("copy", "move", "hardlink", "symlink", "direct", "none")
"""How a transfer between repositories moves files (``none``: registry rows only)."""

TRANSFER_SCOPES = ("limited", "full")
"""What a transfer takes besides the datasets (``full``: provenance and batch history too)."""
