"""Fetch the dashboard's chart library from the npm registry into the package.

    python scripts/ui_assets.py src/shipyard/ui/static/vendor/uplot

Reads the pinned package, version and tarball integrity from SOURCE.json beside the files,
runs `npm pack`, refuses a tarball whose SHA-512 differs, and copies `dist/` files and the
licence; SOURCE.json's per-file SHA-256 are rewritten (tests check the shipped files against
them). Installing shipyard needs no npm: the files are committed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def main(folder: Path) -> None:
    source = json.loads((folder / "SOURCE.json").read_text())
    spec = f"{source['package']}@{source['version']}"
    with tempfile.TemporaryDirectory() as scratch:
        packed = json.loads(
            subprocess.run(
                ["npm", "pack", spec, "--json", "--pack-destination", scratch],
                check=True, capture_output=True, text=True,
            ).stdout
        )[0]  # fmt: skip
        tarball = Path(scratch) / packed["filename"]
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != source["integrity"]:
            sys.exit(f"{spec}: the tarball's integrity sha512-{digest} is not the pinned one")
        with tarfile.open(tarball) as archive:
            for name in source["files"]:
                member = archive.extractfile(f"package/dist/{name}")
                assert member is not None
                data = member.read()
                (folder / name).write_bytes(data)
                source["files"][name] = hashlib.sha256(data).hexdigest()
            licence = archive.extractfile("package/LICENSE")
            assert licence is not None
            (folder / "LICENSE").write_bytes(licence.read())
    (folder / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")
    print(f"{spec}: {', '.join(source['files'])} and LICENSE into {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
