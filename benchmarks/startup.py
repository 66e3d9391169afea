"""Start-up: from process start to a healthy ``/_emulator/health``, and the pytest fixture.

* **process**: ``python -m emulator`` on two free ports; the clock starts just
  before ``Popen`` and stops at the first HTTP 200 from ``/_emulator/health``
  (polled every 2 ms over the cleartext port). The first run uses an empty
  state directory (the local CA and certificate are generated: *cold*), the
  others reuse it (*warm*). ``python -c pass`` is measured too: the floor any
  Python server pays.
* **fixture**: a one-test pytest run asking for the plugin's session fixture
  (``medscribe_emulator_server``; ``emulator_server`` of the repository's
  ``tests/conftest.py`` if the plugin is missing); its set-up time comes from
  pytest's ``--durations`` report, and the whole pytest run is timed as well.
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import servers

__all__ = ["measure_process_startup", "measure_fixture_startup", "free_port"]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(
                b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            status = sock.recv(64)
    except OSError:
        return False
    return status.startswith(b"HTTP/1.1 200")


def _time_to_healthy(state_dir: Path, *, module: str, timeout: float = 20.0) -> float:
    port, h2c_port = free_port(), free_port()
    args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--h2c-port", str(h2c_port), "--state-dir", str(state_dir), "--log-level", "warning"]
    started = time.monotonic()
    process = subprocess.Popen(
        args,
        cwd=servers.emulator_root,
        env=servers.server_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        while not _healthy(h2c_port):
            if process.poll() is not None:
                raise RuntimeError(f"{module} exited with status {process.returncode}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{module} not healthy within {timeout} s")
            time.sleep(0.002)
        return time.monotonic() - started
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _python_floor() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=servers.server_env())
    return time.monotonic() - started


def measure_process_startup(*, runs: int = 5) -> dict[str, object]:
    """Time ``python -m emulator`` to healthy: one cold run, ``runs - 1`` warm ones.

    Returns milliseconds: ``cold_ms``, ``warm_median_ms``, ``warm_min_ms``,
    ``warm_max_ms``, ``python_floor_ms`` and every sample in ``samples_ms``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-startup-", dir=servers.state_parent()) as tmp:
        state = Path(tmp)
        cold = _time_to_healthy(state, module="emulator")
        warm = [_time_to_healthy(state, module="emulator") for _ in range(max(1, runs - 1))]
    floor = min(_python_floor() for _ in range(3))
    return {
        "cold_ms": round(cold * 1000, 1),
        "warm_median_ms": round(statistics.median(warm) * 1000, 1),
        "warm_min_ms": round(min(warm) * 1000, 1),
        "warm_max_ms": round(max(warm) * 1000, 1),
        "python_floor_ms": round(floor * 1000, 1),
        "samples_ms": [round(v * 1000, 1) for v in [cold, *warm]],
    }


_PLUGIN_TEST = """
def test_fixture_starts({fixture}):
    assert {fixture} is not None
"""

_DURATION = re.compile(r"^\s*([0-9.]+)s\s+setup\s+\S*test_fixture_starts", re.MULTILINE)


def _plugin_registered() -> bool:
    from importlib.metadata import entry_points

    return any(
        ep.value.startswith("emulator.pytest_plugin") for ep in entry_points(group="pytest11")
    )


def measure_fixture_startup(*, runs: int = 3) -> dict[str, object]:
    """Time a one-test pytest run whose only fixture starts an emulator.

    Returns ``fixture``, the fixture's name, ``setup_median_ms`` (pytest's own
    set-up time of that test: the fixture starting the emulator), and
    ``pytest_wall_median_ms`` (the whole ``python -m pytest`` process); or
    ``error`` when it could not run.
    """
    try:
        import emulator.pytest_plugin  # noqa: F401

        fixture, plugin_args = (
            "medscribe_emulator_server",
            ([] if _plugin_registered() else ["-p", "emulator.pytest_plugin"]),
        )
    except ImportError:
        fixture, plugin_args = "emulator_server", ["-p", "tests.conftest"]
    setups: list[float] = []
    walls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-fixture-", dir=servers.state_parent()) as tmp:
        test_file = Path(tmp) / "test_fixture_startup.py"
        test_file.write_text(_PLUGIN_TEST.format(fixture=fixture))
        (Path(tmp) / "pytest.ini").write_text("[pytest]\n")
        args = [sys.executable, "-m", "pytest", str(test_file), "-q", "--durations=0"]
        args += ["-p", "no:cacheprovider", *plugin_args]
        for _ in range(runs):
            started = time.monotonic()
            done = subprocess.run(
                args, cwd=tmp, env=servers.server_env(), capture_output=True, text=True
            )
            walls.append(time.monotonic() - started)
            match = _DURATION.search(done.stdout)
            if done.returncode != 0 or match is None:
                return {"fixture": fixture, "error": (done.stdout + done.stderr)[-1500:]}
            setups.append(float(match.group(1)))
    return {
        "fixture": fixture,
        "setup_median_ms": round(statistics.median(setups) * 1000, 1),
        "pytest_wall_median_ms": round(statistics.median(walls) * 1000, 1),
        "setup_samples_ms": [round(v * 1000, 1) for v in setups],
    }
