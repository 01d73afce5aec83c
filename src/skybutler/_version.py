"""The skybutler version, as a literal.

A module of its own so that code inside the package can name the version without
importing the package root; a literal so that naming it costs no package-metadata
lookup (``importlib.metadata`` took ~100 ms of every fresh process, CLI call and job).
``tests/test_public_api.py`` keeps it equal to ``project.version`` in pyproject.toml.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.3.0.dev0"
