"""The README's settings and shipyard.yaml tables are the code's, and its commands exist."""

from __future__ import annotations

import re
import tomllib

from shipyard.core import Settings
from shipyard.retraining import RetrainSpec
from tests.readme import README, generated, settings_table, yaml_table


def test_the_generated_tables_match_the_code() -> None:
    text = README.read_text()
    assert generated(text) == text, "README.md is out of date: run `make readme`"


def test_every_setting_and_every_yaml_key_is_described() -> None:
    settings = settings_table()
    for name, field in Settings.model_fields.items():
        assert f"`SHIPYARD_{name.upper()}`" in settings
        assert field.description, f"Settings.{name} has no description"
    keys = yaml_table()
    for key in ("train", "params", "data.path", "data.source", "holdout.fraction",
                "rollout.canary", "policies[].on_alert", "threshold_share"):  # fmt: skip
        assert f"| `{key}` |" in keys
    for row in keys.splitlines()[2:]:
        assert row.rsplit("|", 2)[1].strip(), f"no description: {row}"
    assert "`function(frame, params)`" in keys
    assert RetrainSpec.model_fields["train"].description


def test_links_to_the_repository_s_own_files_resolve() -> None:
    links = re.findall(r"\]\(([^)#:]+)\)", README.read_text())
    assert "docs/ARCHITECTURE.md" in links
    for link in links:
        assert (README.parent / link).exists(), f"README links to {link}, which does not exist"


def test_the_architecture_names_every_layer_the_import_contract_enforces() -> None:
    project = tomllib.loads((README.parent / "pyproject.toml").read_text())
    layers = next(
        c["layers"] for c in project["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    architecture = (README.parent / "docs" / "ARCHITECTURE.md").read_text()
    for layer in layers:
        for package in layer.split("|"):
            name = package.strip().removeprefix("shipyard.")
            assert re.search(rf"\b{name}\b", architecture), f"ARCHITECTURE.md omits {package}"
