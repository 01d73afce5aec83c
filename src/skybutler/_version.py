"""The installed skybutler's version, read once from the package metadata.

A module of its own so that code inside the package can name the version without
importing the package root (which imports every layer).
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("skybutler")
except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
