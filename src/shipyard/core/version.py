"""The version of shipyard, in the one place it is written."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
