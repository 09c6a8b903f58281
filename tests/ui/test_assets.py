"""Everything a dashboard page loads ships inside the package: no CDN, no font service; the
chart library is the file the npm registry serves for the pinned version."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from shipyard.ui.api import static_dir

TEMPLATES = Path(static_dir()).parent / "templates"


def test_the_vendored_chart_library_is_the_pinned_release() -> None:
    folder = static_dir() / "vendor" / "uplot"
    source = json.loads((folder / "SOURCE.json").read_text())
    for name, digest in source["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    banner = (folder / "uPlot.iife.min.js").read_text()[:80]
    assert f"(v{source['version']})" in banner
    assert (folder / "LICENSE").read_text().startswith("The MIT License")


def test_pages_load_nothing_from_another_host() -> None:
    remote = re.compile(r"""(src|href)=["'](https?:)?//""")
    for template in TEMPLATES.glob("*.j2"):
        assert not remote.search(template.read_text()), template.name
    for asset in ("app.css", "app.js"):
        text = (static_dir() / asset).read_text()
        for remote_reference in ("http://", "https://", "@import", "url("):
            assert remote_reference not in text, (asset, remote_reference)
