"""A chaos delay on one session's output holds up that session only, through the real SDK.

The AWS SDK puts every session of one client on one HTTP/2 connection. hypercorn
feeds each stream's request DATA to its app through a bounded queue (ten
messages) and used to stop reading the connection while one queue was full, so
an app busy elsewhere (here: asleep in a chaos ``delay`` before its response)
stalled every other session on that connection once its client had sent more
than ten events. ``DuplexH2Protocol._hold`` (emulator/hypercorn_h2.py) now holds
that stream's DATA unacknowledged and lets the other streams go on.

Nothing here is timed: the delayed session's delay is an hour, far beyond any
bound of the test, and its app is known to be in that delay (not just slow)
because the emulator opens the session's record and starts the delay with no
await between them. The other session then has to run to completion on the same
client while the delayed one has still produced nothing; ``asyncio.wait_for``
bounds each step so that a regression fails instead of hanging. The test then
ends the delay itself, so the delayed session finishes too (its held input
handed over intact) and no app is left asleep when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest

from emulator.chaos import ChaosRunner
from emulator.sdk import make_client
from emulator.server import Settings

from .support import (
    admin,
    audio_event,
    configuration_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
    running_emulator,
    stream_input,
)
from .test_chaos import SCRIPT

#: The delayed session's delay: the rules' cap, so it cannot run out during the test.
HOUR = 3600.0
#: A generous bound on each step, so that a stalled connection fails the test.
BOUND = 60.0
#: A bound on each step of the clean-up after a failure.
CLEANUP_BOUND = 10.0
#: Audio events the delayed session sends while its app sleeps: hypercorn's app
#: queue takes ten. Its input is closed before the other session starts, and the
#: SDK's ``close`` returns once every event has been handed to its CRT writer,
#: which writes one at a time: so at least 40 events are on the connection ahead
#: of anything the other session sends.
DELAYED_EVENTS = 40
#: 10 ms of 16 kHz PCM per event (about 620 bytes signed and framed): the whole
#: input stays well inside the 64 KiB flow-control windows, stream and connection,
#: though the server leaves it unacknowledged while the app sleeps.
DELAYED_CHUNK = 320


class DelayControl:
    """Lets the test end the chaos delays early; until then they run as the rule says.

    ``ChaosRunner.before_response`` runs as it is, in a task of its own that
    :meth:`end` cancels from the test's thread; after that the runner's delays
    (``_delay``, also applied before each output write) are zero.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ended = threading.Event()
        self.sleeping: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        before_response, delay = ChaosRunner.before_response, ChaosRunner._delay
        control = self

        async def interruptible_before_response(runner: ChaosRunner) -> None:
            sleep = asyncio.ensure_future(before_response(runner))
            control.sleeping.append((asyncio.get_running_loop(), sleep))
            try:
                await sleep
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # the app itself is cancelled
                    raise

        def ended_delay(runner: ChaosRunner) -> float:
            return 0.0 if control.ended.is_set() else delay(runner)

        monkeypatch.setattr(ChaosRunner, "before_response", interruptible_before_response)
        monkeypatch.setattr(ChaosRunner, "_delay", ended_delay)

    def end(self) -> None:
        self.ended.set()
        for loop, sleep in self.sleeping:
            loop.call_soon_threadsafe(sleep.cancel)


def add_rule(base_url: str, rule: dict[str, Any]) -> dict[str, Any]:
    status, body = admin(base_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    return body


def record_connections(client: Any) -> list[Any]:
    """Record the connection each of ``client``'s requests goes out on.

    The emulator records no connection per session, so this is read on the
    client's side, from the SDK's CRT transport (it pools one connection per
    endpoint, and every HTTP/2 request of the client shares it).
    """
    transport = client._config.transport
    connections: list[Any] = []
    get_connection = transport._get_connection

    async def recording(url: Any) -> Any:
        connection = await get_connection(url)
        connections.append(connection)
        return connection

    transport._get_connection = recording
    return connections


async def opened(base_url: str, session_id: str) -> dict[str, Any]:
    """Wait until the emulator has opened ``session_id``'s stream; return its details.

    The stream adapter opens the session's record and goes straight into the
    chaos delay (``ChaosRunner.before_response``) without yielding to the loop,
    so a record visible here means its app is asleep in that delay.
    """
    while True:
        status, details = admin(base_url, "GET", f"/_emulator/sessions/{session_id}")
        if status == 200:
            return details
        assert status == 404, details
        await asyncio.sleep(0.02)


async def transcript(output: asyncio.Future[Any]) -> list[Any]:
    _, events = await output
    return [event.value.transcript_segment async for event in events]


async def test_a_chaos_delay_on_one_session_does_not_stall_another_on_the_same_client(
    tmp_path, monkeypatch
):
    delays = DelayControl(monkeypatch)
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, seed=7)
    threads_before = set(threading.enumerate())
    delayed, other = new_session_id(), new_session_id()
    with running_emulator(settings) as running:
        base = running.h2c_url
        rule = add_rule(
            base,
            {
                "match": {"sessionId": delayed},
                "scenario": SCRIPT,
                "chaos": {"delay": {"seconds": HOUR}},
            },
        )
        add_rule(base, {"match": {"sessionId": other}, "scenario": SCRIPT})
        async with await make_client(
            endpoint_url=running.endpoint_url, ca_file=running.ca_file
        ) as client:
            connections = record_connections(client)
            stream = await asyncio.wait_for(
                client.start_medical_scribe_listening_session(input=stream_input(delayed)), BOUND
            )
            delayed_output = asyncio.ensure_future(stream.await_output())
            try:
                # The delayed session sends its whole input, more events than the
                # server's queue for it takes, while its app sleeps and reads none.
                tone = pcm_tone(DELAYED_EVENTS * DELAYED_CHUNK / 32000)

                async def send_delayed() -> None:
                    await stream.input_stream.send(configuration_event())
                    for i in range(0, len(tone), DELAYED_CHUNK):
                        await stream.input_stream.send(audio_event(tone[i : i + DELAYED_CHUNK]))
                    await stream.input_stream.send(end_of_session_event())
                    await stream.input_stream.close()

                await asyncio.wait_for(send_delayed(), BOUND)
                details = await asyncio.wait_for(opened(base, delayed), BOUND)
                assert details["status"] == "IN_PROGRESS", details
                assert details["ruleId"] == rule["id"], details

                # The other session, start to finish on the same client meanwhile.
                result = await run_session(client, other, audio=pcm_tone(3.0), timeout=BOUND)
                assert result.error is None, repr(result.error)
                assert [s.content for s in result.finals] == [
                    seg["content"] for seg in SCRIPT["segments"]
                ]
                status, finished = admin(base, "GET", f"/_emulator/sessions/{other}")
                assert finished["status"] == "COMPLETED", finished

                # The delayed session has still produced nothing, not even its
                # response headers, and its app (asleep) has read nothing.
                assert not delayed_output.done()
                status, details = admin(base, "GET", f"/_emulator/sessions/{delayed}")
                assert details["status"] == "IN_PROGRESS", details
                assert details["eventsSent"] == {} and details["eventsReceived"] == {}, details

                # Both sessions went out on one HTTP/2 connection, still open.
                assert len(connections) == 2 and connections[0] is connections[1]
                assert connections[0].is_open()

                # Its delay ended, the delayed session reads everything it was sent,
                # in order, and finishes: its one segment under way, closed at the
                # end of its audio by END_OF_SESSION.
                delays.end()
                segments = await asyncio.wait_for(transcript(delayed_output), BOUND)
                assert [s.content for s in segments if not s.is_partial] == ["first words here"]
                status, details = admin(base, "GET", f"/_emulator/sessions/{delayed}")
                assert details["status"] == "COMPLETED", details
                assert details["eventsReceived"]["audioEvent"] == DELAYED_EVENTS, details
                assert details["audioBytes"] == len(tone), details
            finally:
                # After a failure: end the delay all the same, so that no app is left
                # asleep when the server stops, and stop waiting for the output.
                delays.end()
                if not delayed_output.done():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.input_stream.close(), CLEANUP_BOUND)
                    delayed_output.cancel()
                await asyncio.gather(delayed_output, return_exceptions=True)
    # running_emulator has stopped the server and joined its thread.
    leftover = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not [t for t in leftover if t.name == "medscribe-emulator"], leftover
