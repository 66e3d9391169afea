"""Entropy: every random value comes from emulator.ids, with the derivations the
values already handed out rest on, and --seed reaches chaos and the synthetic visit."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import chaos, server, synthetic
from emulator.cli import parse_settings
from emulator.ids import id_rng, session_rng

from .support import H2Client, admin, new_session_id, running_emulator
from .test_chaos import SCRIPT, body
from .test_stream_wire import END, headers

# Text UTF-8 can encode: a session id is a header's text, which holds no lone surrogate.
_SESSION_IDS = st.text(st.characters(exclude_categories=("Cs",)))


def _draws(rng: random.Random) -> list[float]:
    return [rng.random() for _ in range(5)] + [rng.getrandbits(64)]


@given(seed=st.integers(min_value=-(2**63), max_value=2**63), session_id=_SESSION_IDS)
def test_chaos_generator_is_seeded_with_the_text_seed_colon_session_id(seed, session_id):
    # The derivation chaos.py used before emulator.ids owned it: a rule's jitter
    # must not change for a seed and session a test already relies on.
    old = random.Random(f"{seed}:{session_id}")
    assert _draws(session_rng(seed, session_id, "chaos")) == _draws(old)


@given(seed=st.integers(min_value=-(2**63), max_value=2**63), session_id=_SESSION_IDS)
def test_synthetic_generator_is_seeded_with_sha256_of_seed_nul_session_id(seed, session_id):
    # The derivation synthetic.py used before: transcripts are pinned by it.
    digest = hashlib.sha256(f"{seed}\x00{session_id}".encode()).digest()
    old = random.Random(int.from_bytes(digest, "big"))
    assert _draws(session_rng(seed, session_id, "synthetic")) == _draws(old)


def test_the_two_purposes_give_different_sequences_and_others_are_refused():
    assert _draws(session_rng(7, "s", "chaos")) != _draws(session_rng(7, "s", "synthetic"))
    with pytest.raises(ValueError, match="no random source for 'rules'"):
        session_rng(7, "s", "rules")  # type: ignore[arg-type]


def test_resource_ids_come_from_the_os_so_they_do_not_repeat_after_a_restart(tmp_path, monkeypatch):
    """id_rng() is the OS's entropy, and the server's registry takes it."""
    assert isinstance(id_rng(), random.SystemRandom)
    given_out: list[random.Random] = []

    def spy() -> random.Random:
        given_out.append(id_rng())
        return given_out[-1]

    monkeypatch.setattr(server, "id_rng", spy)
    backend = server.build_backend(server.Settings(state_dir=tmp_path))
    try:
        assert len(given_out) == 1
        assert backend.resources._rng is given_out[0]
    finally:
        backend.close()
        backend.resources.close()


def test_seed_option_reaches_chaos_jitter_and_the_synthetic_visit(tmp_path: Path, monkeypatch):
    """A real server started from ``--seed 4242``: a jittered chaos rule's
    generator and the synthetic visit's are both derived from 4242 and the
    session's id."""
    _, _, settings = parse_settings(
        ["serve", "--seed", "4242", "--host", "127.0.0.1", "--port", "0", "--h2c-port", "0"]
        + ["--state-dir", str(tmp_path)]
    )
    calls: list[tuple[Any, ...]] = []

    def recording(seed: int, session_id: str, purpose: Any) -> random.Random:
        calls.append((seed, session_id, purpose))
        return session_rng(seed, session_id, purpose)

    monkeypatch.setattr(chaos, "session_rng", recording)
    monkeypatch.setattr(synthetic, "session_rng", recording)
    jittered, generated = new_session_id(), new_session_id()
    with running_emulator(settings) as emulator:
        rule = {"match": {"sessionId": jittered}, "scenario": SCRIPT}
        rule["chaos"] = {"delay": {"seconds": 0.01, "jitter": 0.01}}
        status, answer = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
        assert status == 201, answer
        for session_id in (jittered, generated):
            client = H2Client("127.0.0.1", emulator.h2c_port)
            try:
                stream = client.request(headers(session_id))
                client.send(stream, body(1.0) + END, end_stream=True)
                assert client.wait(stream)["headers"][":status"] == "200"
            finally:
                client.close()
    assert (4242, jittered, "chaos") in calls
    assert (4242, generated, "synthetic") in calls
    assert {call[0] for call in calls} == {4242}
