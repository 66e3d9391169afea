"""`pip install .` gives the console script, the import package and the packaged fixtures."""

from __future__ import annotations

import os
import shutil
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
    assert "medscribe-emulator = emulator.__main__:console" in text


def test_installed_fixtures_load_outside_the_source_tree(wheel, tmp_path):
    """The packaged fixtures are found and valid when the package is not a source checkout."""
    wheel.extractall(tmp_path)
    code = (
        "import emulator.server as s; from emulator.documents import load_scenario_dir;"
        "p = s.packaged_fixtures(); assert 'site' in str(p) or 'tmp' in str(p), p;"
        "print(sorted(load_scenario_dir(p)))"
    )
    assert "primary-care-visit" in _run_installed(tmp_path, code)


_DESCRIBE = (
    "from emulator import speedups; import os;"
    "assert os.path.abspath(speedups.__file__).startswith(os.getcwd()), speedups.__file__;"
    "print(speedups.describe())"
)


def _run_installed(site: Path, code: str, *flags: str) -> str:
    """Run ``code`` in a Python whose path starts at ``site`` (an extracted wheel);
    return what it printed."""
    result = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=site,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _describe_installed(site: Path) -> str:
    """speedups.describe() of the package extracted under ``site``."""
    # -S: no site-packages, so the editable install of this checkout (whose
    # finder maps every emulator.* name to it) cannot answer for the wheel.
    return _run_installed(site, _DESCRIBE, "-S")


def _speedups_in(archive: zipfile.ZipFile) -> list[str]:
    return [
        n for n in archive.namelist() if n.startswith("emulator/_speedups") and n.endswith(".so")
    ]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")
def test_wheel_ships_the_c_speedups_and_uses_them(wheel, tmp_path):
    """Where a C compiler is found, the wheel carries emulator._speedups, and the
    installed package picks it."""
    assert len(_speedups_in(wheel)) == 1
    wheel.extractall(tmp_path)
    assert _describe_installed(tmp_path).startswith("C (emulator._speedups)")


@pytest.mark.slow
def test_without_a_c_compiler_the_wheel_builds_pure_python(tmp_path):
    """The extension is optional: a failing compiler leaves it out of the wheel,
    and the installed package runs its Python code instead."""
    # A clean copy: the checkout may hold a build/ directory and an in-place
    # extension from `pip install -e .`.
    source = tmp_path / "source"
    leftovers = shutil.ignore_patterns("*.so", "__pycache__", "build", "*.egg-info")
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("emulator", "fixtures"):
        shutil.copytree(ROOT / name, source / name, ignore=leftovers)
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        timeout=300,
        env={**os.environ, "CC": "false", "PIP_NO_CACHE_DIR": "1"},
        capture_output=True,
    )
    (path,) = out.glob("medscribe_emulator-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(path) as archive:
        assert _speedups_in(archive) == []
        archive.extractall(site)
    assert _describe_installed(site).startswith("pure Python")


def _requirement_names(requirements: list[str]) -> dict[str, str]:
    """{distribution name: the requirement as written, spaces removed}."""
    import re

    return {
        re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower(): r.replace(" ", "")
        for r in requirements
    }


def test_the_user_extras_install_what_each_way_in_needs_at_the_tested_versions():
    """``sdk``, ``s3`` and ``pytest`` name what ``emulator.sdk``, ``--s3-endpoint-url`` and
    the fixture's async tests import, pinned as the test extra pins them."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    tested = _requirement_names(extras["test"])
    needs = {
        "sdk": {"aws-sdk-connecthealth"},
        "s3": {"boto3"},
        "pytest": {"aws-sdk-connecthealth", "pytest", "pytest-asyncio"},
    }
    for extra, names in needs.items():
        declared = _requirement_names(extras[extra])
        assert set(declared) == names, extra
        for name, requirement in declared.items():
            assert requirement == tested[name], f"{extra}: {requirement} vs test's {tested[name]}"


def test_wheel_carries_the_license_its_metadata_declares(wheel):
    """Apache-2.0 asks that the license go with the software."""
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in wheel.read(metadata).decode()
    (license_file,) = [n for n in wheel.namelist() if n.endswith("/licenses/LICENSE")]
    assert b"Apache License" in wheel.read(license_file)
    assert b"Version 2.0, January 2004" in wheel.read(license_file)


def test_the_source_distribution_leaves_out_the_tests_it_could_not_run(tmp_path):
    """Its test files without their support modules failed to import (745 tests, 29
    errors): the suite runs from a clone."""
    # pypa's build, in an isolated environment as pip's wheel above; run from
    # elsewhere, so that a setuptools build/ folder in the tree is not taken for it.
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    import tarfile

    (path,) = tmp_path.glob("medscribe_emulator-*.tar.gz")
    with tarfile.open(path) as archive:
        names = archive.getnames()
    assert not [n for n in names if "/tests/" in n]
    assert any(n.endswith("/LICENSE") for n in names)
    assert any(n.endswith("/emulator/_speedups.c") for n in names)
