"""Every package says what it exports: `__all__` names exist, and nothing public is left out."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import shipyard

PACKAGES = sorted(
    name
    for _, name, is_package in pkgutil.walk_packages(shipyard.__path__, "shipyard.")
    if is_package and ".migrations" not in name
)


@pytest.mark.parametrize("name", ["shipyard", *PACKAGES])
def test_all_lists_exactly_the_public_names(name: str) -> None:
    package = importlib.import_module(name)
    exported = set(package.__all__)
    assert all(hasattr(package, n) for n in exported), f"{name}.__all__ names something it lacks"
    # defined in this package (its own modules), not imported from elsewhere
    public = {
        n
        for n, value in vars(package).items()
        if not n.startswith("_")
        and not isinstance(value, types.ModuleType)
        and str(getattr(value, "__module__", "")).startswith(name)
    }
    assert public - exported == set(), f"{name} has public names missing from __all__"
