"""`pip install .` gives the console script, the import package and the packaged fixtures."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("medscribe_emulator-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_ships_every_shipped_scenario_and_the_rules_file(wheel):
    names = set(wheel.namelist())
    for scenario in (ROOT / "fixtures" / "scenarios").glob("*.yaml"):
        assert f"emulator/fixtures/scenarios/{scenario.name}" in names
    assert "emulator/fixtures/rules.yaml" in names


def test_wheel_declares_the_console_script(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "medscribe-emulator = emulator.cli:main" in text


def test_installed_fixtures_load_outside_the_source_tree(wheel, tmp_path):
    """The packaged fixtures are found and valid when the package is not a source checkout."""
    wheel.extractall(tmp_path)
    code = (
        "import emulator.server as s; from emulator.scenario import load_scenario_dir;"
        "p = s.packaged_fixtures(); assert 'site' in str(p) or 'tmp' in str(p), p;"
        "print(sorted(load_scenario_dir(p)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "primary-care-visit" in result.stdout
