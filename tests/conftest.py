"""Shared fixtures: one real emulator for the test session, reset before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.server import RunningServer, Settings

from .support import admin, running_emulator


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    state = tmp_path_factory.mktemp("state")
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=Path(state), seed=7)
    with running_emulator(settings) as running:
        yield running


@pytest.fixture
def emulator(emulator_server: RunningServer) -> RunningServer:
    """The shared emulator with no rules and no sessions."""
    status, _ = admin(emulator_server.h2c_url, "POST", "/_emulator/reset")
    assert status == 200
    return emulator_server


@pytest.fixture
async def client(emulator: RunningServer) -> AsyncIterator[Any]:
    """A real aws-sdk-connecthealth client on the emulator's TLS endpoint."""
    from emulator.sdk import make_client

    sdk_client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    try:
        yield sdk_client
    finally:
        await sdk_client._config.transport.close()  # type: ignore[attr-defined]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-sessions",
        type=int,
        default=100,
        help="sessions per round in the soak test (default 100; CI uses the default)",
    )
