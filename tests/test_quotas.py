"""--quotas: the service's per-key limits, and the always-on server-wide stream cap."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_sdk_connecthealth import models as m

from emulator.errors import ServiceQuotaExceededException, ThrottlingException
from emulator.quotas import ANONYMOUS, Quotas, QuotaSettings, access_key_of
from emulator.server import RunningServer, Settings

from .support import DOMAIN_ID, SUBSCRIPTION_ID, H2Client, new_session_id, running_emulator
from .test_stream_wire import END, config_event, headers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_start_rate_is_per_key_per_second():
    clock = Clock()
    quotas = Quotas(QuotaSettings(per_key=True, start_tps=2, concurrent_sessions=99), clock=clock)
    quotas.open_stream("A")
    quotas.open_stream("A")
    with pytest.raises(
        ThrottlingException,
        match=r"2 requests per second for access key A \(--quota-start-tps 2\)$",
    ):
        quotas.open_stream("A")
    quotas.open_stream("B")  # another key has its own budget
    clock.now += 1.0
    quotas.open_stream("A")


@pytest.mark.parametrize(
    ("rate", "gap", "admitted"),
    [(0.5, 1.1, [True, False, True, False]), (2.5, 0.25, [True, True, False, False, True])],
)
def test_a_fractional_rate_is_never_exceeded(rate, gap, admitted):
    """0.5 a second admitted one request every second, as 1 did; 2.5 admitted 3."""
    clock = Clock()
    quotas = Quotas(QuotaSettings(per_key=True, get_tps=rate), clock=clock)
    seen = []
    for _ in admitted:
        try:
            quotas.check_get("A")
            seen.append(True)
        except ThrottlingException:
            seen.append(False)
        clock.now += gap
    assert seen == admitted


def test_a_rate_under_one_keeps_its_window_through_a_sweep():
    from emulator import quotas as quotas_module

    clock = Clock()
    quotas = Quotas(QuotaSettings(per_key=True, get_tps=0.5), clock=clock)
    quotas.check_get("slow")
    clock.now += 1.5
    for n in range(quotas_module._MIN_SWEEP * 2):  # a sweep of windows a second idle
        quotas.check_get(f"other{n}")
    with pytest.raises(ThrottlingException):
        quotas.check_get("slow")  # its one request of the last two seconds was kept


def test_rate_windows_of_keys_idle_for_a_second_are_swept_and_busy_ones_kept():
    """A fleet with a new access key per job grew the server about 1 KB a key, for good."""
    from emulator import quotas as quotas_module

    clock = Clock()
    quotas = Quotas(QuotaSettings(per_key=True, start_tps=2, get_tps=1), clock=clock)
    for n in range(50_000):
        quotas.check_get(f"AKIDTEMP{n}")
        clock.now += 0.001
    held = len(quotas._gets)
    assert held < 3 * 1000  # a second's worth of keys (1,000 here), not 50,000
    quotas.check_get("busy")
    for n in range(quotas_module._MIN_SWEEP * 4):  # sweeps, within half a second
        quotas.check_get(f"AKIDMORE{n}")
        clock.now += 0.5 / (quotas_module._MIN_SWEEP * 4)
    with pytest.raises(ThrottlingException):  # its window was kept: no fresh budget
        quotas.check_get("busy")
    clock.now += 0.5
    quotas.check_get("busy")


def test_concurrent_sessions_are_counted_until_closed():
    quotas = Quotas(QuotaSettings(per_key=True, start_tps=99, concurrent_sessions=2))
    quotas.open_stream("A")
    quotas.open_stream("A")
    with pytest.raises(
        ServiceQuotaExceededException,
        match=r"2 concurrent streaming sessions, the quota \(--quota-concurrent-sessions 2\)$",
    ):
        quotas.open_stream("A")
    quotas.close_stream("A")
    quotas.open_stream("A")


def test_the_server_wide_cap_applies_without_quotas():
    quotas = Quotas(QuotaSettings(per_key=False, max_streams=2))
    quotas.open_stream("A")
    quotas.open_stream("B")
    with pytest.raises(ServiceQuotaExceededException, match="--max-streams 2"):
        quotas.open_stream("C")


def test_access_key_comes_from_the_credential_scope():
    auth = b"AWS4-HMAC-SHA256 Credential=AKIDX/20261121/us-east-1/health-agent/aws4_request, "
    assert (
        access_key_of([(b"authorization", auth + b"SignedHeaders=host, Signature=00")]) == "AKIDX"
    )
    assert access_key_of([]) == ANONYMOUS


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(
        port=0,
        h2c_port=0,
        state_dir=Path(tmp_path_factory.mktemp("quota-state")),
        quotas=True,
        quota_concurrent_sessions=2,
        quota_start_tps=100,
        quota_get_tps=1,
    )
    with running_emulator(settings) as running:
        yield running


def test_third_concurrent_session_of_a_key_gets_402(limited):
    client = H2Client("127.0.0.1", limited.h2c_port)
    try:
        live = [client.request(headers(new_session_id())) for _ in range(2)]
        for stream in live:
            client.send(stream, config_event())
            client.wait(stream, for_headers=True)
        third = client.request(headers(new_session_id()))
        response = client.wait(third)
        assert response["headers"][":status"] == "402"
        assert response["headers"]["x-amzn-errortype"] == "ServiceQuotaExceededException"
        assert "concurrent" in json.loads(response["data"])["message"]
        client.send(live[0], END, end_stream=True)
        client.wait(live[0])
        fourth = client.request(headers(new_session_id()))
        assert client.wait(fourth, for_headers=True)["headers"][":status"] == "200"
    finally:
        client.close()


def test_a_stream_refused_after_taking_its_quota_slot_gives_it_back(tmp_path):
    """A stream the backend refuses once the key's concurrent-session slot is
    taken (here reopening a COMPLETED session) returns the slot: refused
    reopens, more than the quota allows, never make a 402 of a later stream."""
    settings = Settings(
        port=0,
        h2c_port=0,
        state_dir=tmp_path,
        quotas=True,
        quota_concurrent_sessions=1,
        quota_start_tps=100,
    )
    with running_emulator(settings) as running:
        client = H2Client("127.0.0.1", running.h2c_port)
        try:
            session_id = new_session_id()
            stream = client.request(headers(session_id))
            client.send(stream, config_event() + END, end_stream=True)
            assert client.wait(stream)["headers"][":status"] == "200"
            for _ in range(3):
                reopen = client.request(headers(session_id))
                client.send(reopen, config_event() + END, end_stream=True)
                response = client.wait(reopen)
                assert response["headers"][":status"] == "400", response
                assert "is COMPLETED" in json.loads(response["data"])["message"]
            fresh = client.request(headers(new_session_id()))
            client.send(fresh, config_event() + END, end_stream=True)
            response = client.wait(fresh)
            assert response["headers"][":status"] == "200", response
            assert response["ended"] and response["reset"] is None
        finally:
            client.close()


def test_a_get_over_the_rate_is_a_429_on_the_wire(limited):
    """Request rates over the quota are 429s: the SDK names ThrottlingException from
    the error type alone, so only the wire shows the status (what a client's retry
    policy or a proxy sees)."""
    client = H2Client("127.0.0.1", limited.h2c_port)
    path = (
        f"/medical-scribe-stream/domain/{DOMAIN_ID}/subscription/{SUBSCRIPTION_ID}"
        f"/session/{new_session_id()}"
    )
    try:
        # One look-up a second for the key: of three in a row, two fall in one
        # second (however the second boundary falls), the later over it.
        statuses = []
        for _ in range(3):
            response = client.wait(client.request({}, path=path, method="GET", end_stream=True))
            statuses.append(response["headers"][":status"])
            if statuses[-1] == "429":
                break
    finally:
        client.close()
    assert statuses[0] == "404" and statuses[-1] == "429", statuses
    assert response["headers"]["x-amzn-errortype"] == "ThrottlingException"
    assert (
        "GetMedicalScribeListeningSession allows 1 request per second for access key "
        in json.loads(response["data"])["message"]
    )
    assert json.loads(response["data"])["message"].endswith(" (--quota-get-tps 1)")


async def test_get_rate_reaches_the_sdk_as_throttling_exception(limited, caplog):
    """And the throttle is logged, as a refused stream is (it was not: a poller
    seeing 429s found nothing in the emulator's log)."""
    caplog.set_level("INFO", logger="medscribe")
    client, request = await _one_attempt_client(limited)
    try:
        with pytest.raises(m.ResourceNotFoundException):
            await client.get_medical_scribe_listening_session(input=request)
        with pytest.raises(m.ThrottlingException):
            await client.get_medical_scribe_listening_session(input=request)
    finally:
        await client._config.transport.close()
    (line,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "rejected: ThrottlingException (GET /medical-scribe-stream/domain/" in line
    assert f"/session/{request.session_id}): Rate exceeded: GetMedicalScribe" in line


async def test_a_fractional_get_rate_reaches_the_sdk_as_never_exceeded(tmp_path):
    """--quota-get-tps 0.5 admitted one Get every second, as 1 did: a look-up 1.1 s
    after the first was taken. It is throttled now, and one 2 s after is taken."""
    import asyncio
    import time

    async with _a_get_every_two_seconds(tmp_path) as (_, get):
        await get(m.ResourceNotFoundException)
        first = time.monotonic()
        await asyncio.sleep(1.1)
        await get(m.ThrottlingException)
        await asyncio.sleep(max(0.0, first + 2.1 - time.monotonic()))
        await get(m.ResourceNotFoundException)


@contextlib.asynccontextmanager
async def _a_get_every_two_seconds(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Any]]:
    """An emulator with --quotas --quota-get-tps 0.5, and ``get(expected)``: a Get
    of a session that does not exist by a one-attempt SDK client, which raises
    ``expected``."""
    settings = Settings(port=0, h2c_port=0, state_dir=tmp_path, quotas=True, quota_get_tps=0.5)
    with running_emulator(settings) as running:
        client, request = await _one_attempt_client(running)

        async def get(expected: type[Exception]) -> None:
            with pytest.raises(expected):
                await client.get_medical_scribe_listening_session(input=request)

        try:
            yield running, get
        finally:
            await client._config.transport.close()


async def _one_attempt_client(running: RunningServer) -> tuple[Any, Any]:
    """An SDK client that makes one attempt (it would otherwise retry a throttled
    call until it passes), and a Get of a session that does not exist."""
    from smithy_core.retries import RetryStrategyOptions

    from emulator.sdk import make_client

    client = await make_client(
        endpoint_url=running.endpoint_url,
        ca_file=running.ca_file,
        retry_strategy=RetryStrategyOptions(max_attempts=1),
    )
    request = m.GetMedicalScribeListeningSessionInput(
        domain_id=DOMAIN_ID, subscription_id=SUBSCRIPTION_ID, session_id=new_session_id()
    )
    return client, request


async def test_a_reset_forgets_the_request_rates_as_it_forgets_the_sessions(tmp_path):
    """With --quotas, a test's first look-up (or stream start) after a quick test
    was throttled for that test's requests: the pytest fixture's reset before
    each test forgot the sessions but not the rate windows they filled."""
    from .support import admin

    async with _a_get_every_two_seconds(tmp_path) as (running, get):
        await get(m.ResourceNotFoundException)
        await get(m.ThrottlingException)  # the premise: its one in 2 s taken
        assert admin(running.h2c_url, "POST", "/_emulator/reset")[0] == 200
        await get(m.ResourceNotFoundException)
