"""The container image's Dockerfile, read and linted (no Docker engine runs here: the image is
built where one does, as the README says)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> list[str]:
    """The Dockerfile's stages, each from its FROM line on."""
    return re.split(r"(?m)^(?=FROM )", DOCKERFILE)[1:]


def instruction(stage: str, name: str) -> list[str]:
    """Every `name` instruction of a stage, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", stage)
    return [
        line[len(name) + 1 :].strip() for line in joined.splitlines() if line.startswith(f"{name} ")
    ]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    ran = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_hadolint_would_refuse_an_unpinned_install() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    ran = subprocess.run(
        [str(hadolint), "--no-color", "-"],
        input="FROM python:3.11-slim-bookworm\nRUN pip install requests\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode != 0
    assert "DL3013" in ran.stdout


def test_the_image_is_built_in_one_stage_and_run_from_a_clean_one() -> None:
    build, final = stages()
    assert build.startswith("FROM ${PYTHON_IMAGE} AS build")
    assert final.startswith("FROM ${PYTHON_IMAGE}\n")
    assert re.search(r"(?m)^ARG PYTHON_IMAGE=python:3\.\d+-slim-\w+$", DOCKERFILE)
    # the final stage takes the built environment and nothing else from the build
    assert instruction(final, "COPY") == ["--from=build /opt/shipyard /opt/shipyard"]
    words = " ".join(instruction(final, "RUN")).split()
    assert not {"gcc", "g++", "build-essential", "make", "git", "curl", "wget"} & set(words)
    assert not [w for w in words if w.endswith("-dev")]  # no headers either


def test_the_image_runs_shipyard_as_a_non_root_user_under_an_init() -> None:
    final = stages()[-1]
    assert instruction(final, "USER") == ["10001:10001"]
    assert "useradd --system --uid 10001" in " ".join(instruction(final, "RUN"))
    assert instruction(final, "ENTRYPOINT") == ['["/usr/bin/tini", "--", "shipyard"]']
    assert instruction(final, "CMD") == ['["server", "--host", "0.0.0.0", "--port", "8000"]']
    assert instruction(final, "EXPOSE") == ["8000"]
    env = " ".join(instruction(final, "ENV"))
    assert "SHIPYARD_HOME=/var/lib/shipyard" in env
    assert "PATH=/opt/shipyard/bin:$PATH" in env


def test_the_health_check_asks_the_servers_liveness_route() -> None:
    (check,) = instruction(stages()[-1], "HEALTHCHECK")
    assert "http://127.0.0.1:8000/v2/health/live" in check


def test_the_extras_baked_in_are_the_packages_extras() -> None:
    extras = re.search(r"(?m)^ARG EXTRAS=([\w,]+)$", DOCKERFILE)
    assert extras is not None
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras.group(1).split(",")) <= set(declared)
    assert {"postgres", "redis", "s3"} <= set(extras.group(1).split(","))


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("src/shipyard/app.py", True),
        (".venv/bin/python", False),
        (".git/HEAD", False),
        (".shipyard/shipyard.db", False),
        ("tests/conftest.py", False),
        ("src/shipyard/__pycache__/app.cpython-311.pyc", False),
    ],
)
def test_the_build_context_holds_the_package_sources_only(path: str, sent: bool) -> None:
    # .dockerignore's rules in order, the last match deciding (Docker's semantics, for the
    # patterns used there: `*`, `!name`, `!dir/`, `**/name`)
    included = True
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if pattern == "*":
            matched = True
        elif pattern.startswith("**/"):
            tail = re.escape(pattern[3:]).replace(r"\[co\]", "[co]").replace(r"\*", "[^/]*")
            matched = re.search(rf"(^|/){tail}(/|$)", path) is not None
        else:
            matched = path == pattern or path.startswith(f"{pattern}/")
        if matched:
            included = negated
    assert included is sent
