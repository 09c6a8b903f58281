"""The project file: `shipyard.yaml` (or `[tool.shipyard]` in pyproject.toml), where retraining
specs, KPIs and scheduled batch jobs are declared beside the models. Each reader takes its own
part of the one mapping this module finds and reads."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from shipyard.core.errors import ConfigurationError

__all__ = ["DEFAULT_FILES", "read_project_file"]

DEFAULT_FILES = (Path("shipyard.yaml"), Path("shipyard.yml"), Path("pyproject.toml"))


def read_project_file(
    path: Path | None = None, *, must_exist: bool = True
) -> tuple[Any, Path] | None:
    """The project mapping and the file it came from: `path`, or the first of
    `./shipyard.yaml`, `./shipyard.yml`, `./pyproject.toml` (with a [tool.shipyard] table) that
    exists; None when there is none. A named `path` that does not exist is a
    `ConfigurationError` when `must_exist`; a file that cannot be parsed always is."""
    import yaml  # only when a project file is read

    for candidate in [path] if path is not None else DEFAULT_FILES:
        if not candidate.exists():
            if path is not None and must_exist:
                raise ConfigurationError(f"{path} does not exist")
            continue
        try:
            if candidate.suffix == ".toml":
                raw = tomllib.loads(candidate.read_text()).get("tool", {}).get("shipyard")
                if raw is None:
                    continue
            else:
                raw = yaml.safe_load(candidate.read_text()) or {}
        except (OSError, ValueError, yaml.YAMLError) as error:
            raise ConfigurationError(f"{candidate} cannot be read: {error}") from None
        return raw, candidate
    return None
