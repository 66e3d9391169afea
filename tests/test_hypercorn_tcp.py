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


def test_shutdown_does_not_wait_for_an_idle_tls_client_to_answer_close_notify(tmp_path):
    # A pooled keep-alive client (boto3, the CRT) sits idle and reads nothing:
    # the server's close_notify goes unanswered, and asyncio would hold the
    # connection, and shutdown with it, for its 30 s SSL shutdown timeout.
    import socket
    import ssl
    import time

    from emulator import hypercorn_h2
    from emulator.tls import ensure_certificates

    from .support import serving_tls

    hypercorn_h2.install()
    tls = ensure_certificates(tmp_path)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    context.set_alpn_protocols(["http/1.1"])
    with serving_tls(app, tls, keep_alive_timeout=600) as port:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        client = context.wrap_socket(raw, server_hostname="localhost")
        client.sendall(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        stopping = time.monotonic()  # the client now idles, as a pool does
    try:
        assert time.monotonic() - stopping < 5
    finally:
        client.close()
