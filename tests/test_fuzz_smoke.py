"""A short run of each fuzz target (`python -m fuzz TARGET --seconds N`) finds nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS, seeds

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seed_inputs_pass_through_each_target(target):
    """The seeds are valid input: they exercise the success path, not just errors."""
    for seed in seeds(target):
        TARGETS[target](seed)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_fuzz_run_finds_no_crash(target, tmp_path):
    pytest.importorskip("atheris")
    result = subprocess.run(
        [sys.executable, "-m", "fuzz", target, "--seconds", "4", "--corpus", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DONE" in result.stderr
