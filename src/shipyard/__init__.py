"""shipyard: take a trained model from the lab to production and keep it healthy there."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
