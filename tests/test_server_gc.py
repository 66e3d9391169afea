"""The server process settles its garbage collector once ready; an embedded one does not."""

from __future__ import annotations

import gc
from pathlib import Path

from emulator import server
from emulator.server import RunningServer, Settings

from .support import running_emulator


def test_the_server_process_freezes_what_start_up_made_once_it_is_ready(monkeypatch, tmp_path):
    seen: list[int] = []

    async def serve(settings, *, shutdown, ready):
        seen.append(gc.get_freeze_count())
        ready(
            RunningServer(
                endpoint_url="https://x",
                h2c_url="http://x",
                ca_file=None,
                port=1,
                h2c_port=2,
                app=None,
            )
        )
        seen.append(gc.get_freeze_count())

    monkeypatch.setattr(server, "serve", serve)
    before = gc.get_freeze_count()
    try:
        assert server.run(Settings(state_dir=tmp_path, log_level="warning")) == 0
    finally:
        gc.unfreeze()  # give the test process its collector back
    assert seen[0] == before
    assert seen[1] > before  # start-up's objects are out of later full collections


def test_an_emulator_embedded_in_a_test_process_leaves_its_collector_alone(tmp_path: Path):
    before = gc.get_freeze_count()
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path)
    with running_emulator(settings):
        assert gc.get_freeze_count() == before
