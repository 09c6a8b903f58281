"""The training function is loaded from the spec's folder as the file is now: a long-running
worker picks up edits, and two folders' modules of the same name do not shadow each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.core.errors import ConfigurationError, UserCodeFailed
from shipyard.retraining import RetrainSpec


def test_each_folder_s_module_and_its_edits(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "trainer.py").write_text("def train(frame, params):\n    return 'a1'\n")
    (second / "trainer.py").write_text("def other(frame, params):\n    return 'b'\n")
    spec = RetrainSpec(name="m", train="trainer:train")
    assert spec.entrypoint(first)(None, {}) == "a1"
    assert RetrainSpec(name="n", train="trainer:other").entrypoint(second)(None, {}) == "b"
    with pytest.raises(ConfigurationError, match="trainer has no function 'train'"):
        spec.entrypoint(second)
    (first / "trainer.py").write_text("def train(frame, params):\n    return 'a2'\n")
    assert spec.entrypoint(first)(None, {}) == "a2"  # the edit, without a restart
    (first / "trainer.py").write_text("raise RuntimeError('half-written')\n")
    with pytest.raises(UserCodeFailed, match="RuntimeError: half-written"):
        spec.entrypoint(first)
