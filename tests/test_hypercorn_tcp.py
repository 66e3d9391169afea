"""TLS clients that hang up mid-conversation leave no error tracebacks in the log."""

from __future__ import annotations

import asyncio
import logging

from .support import new_session_id, pcm_tone, run_session


async def test_closing_sdk_clients_leaves_no_unhandled_connection_errors(emulator, caplog):
    from emulator.sdk import make_client

    caplog.set_level(logging.ERROR)
    for _ in range(3):
        client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
        # A session that ends early while the client is still sending, then a hang-up.
        result = await run_session(
            client, new_session_id(), audio=pcm_tone(3.0), end_of_session=False
        )
        assert result.error is None
        await client._config.transport.close()
    # Let the server notice the hang-ups (teardown happens on its own loop).
    await asyncio.sleep(1.0)
    # And a connection the server closes for idleness (keep-alive timeout 5 s)
    # while the client still thinks it is open.
    client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    assert (await run_session(client, new_session_id(), audio=pcm_tone(0.5))).error is None
    await asyncio.sleep(6.0)
    again = await run_session(client, new_session_id(), audio=pcm_tone(8.0), chunk_bytes=32000)
    assert again.error is None and again.finals
    await client._config.transport.close()
    await asyncio.sleep(1.0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
