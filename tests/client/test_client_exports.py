"""What users import: `shipyard.client`'s public names, and the top-level shortcut."""

from __future__ import annotations

import shipyard
import shipyard.client


def test_client_package_exports_exactly_its_public_names() -> None:
    public = {name for name in vars(shipyard.client) if not name.startswith("_")}
    assert set(shipyard.client.__all__) == public - {"annotations"}


def test_client_and_async_client_are_importable_from_shipyard() -> None:
    assert shipyard.Client is shipyard.client.Client
    assert shipyard.AsyncClient is shipyard.client.AsyncClient
