"""Synthetic visits: deterministic, lazy, ordered, and on the right channels."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from itertools import islice, pairwise
from pathlib import Path

import pytest

from emulator import synthetic
from emulator.scenario import Segment
from emulator.synthetic import MAX_AUDIO_SECONDS, SyntheticScenario, synthetic_scenario

ROLES = {0: "CLINICIAN", 1: "PATIENT"}


def _first(n: int, **kwargs) -> list[Segment]:
    kwargs.setdefault("channel_roles", None)
    return list(islice(synthetic_scenario(**kwargs).iter_segments(), n))


@pytest.fixture(scope="module")
def whole_visit() -> list[Segment]:
    return list(
        synthetic_scenario(seed=7, session_id="s-long", channel_roles=ROLES).iter_segments()
    )


def test_same_seed_and_session_id_give_the_same_visit():
    """The same (seed, session id) gives the same first 50 segments."""
    assert _first(50, seed=1, session_id="abc") == _first(50, seed=1, session_id="abc")


def test_different_session_id_or_seed_gives_a_different_visit():
    """Another session id, or another seed, gives different segments."""
    base = _first(50, seed=1, session_id="abc")
    assert _first(50, seed=1, session_id="abd") != base
    assert _first(50, seed=2, session_id="abc") != base


def test_visit_is_the_same_in_another_process():
    """The seed is derived without Python's salted hash(): other processes agree."""
    code = (
        "from itertools import islice; from emulator.synthetic import synthetic_scenario as s;"
        "print([x.content for x in islice(s(seed=3, session_id='p', channel_roles=None)"
        ".iter_segments(), 20)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": salt},
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for salt in ("1", "2")
    }
    (output,) = outputs
    assert output == repr([s.content for s in _first(20, seed=3, session_id="p")]) + "\n"


def test_visit_reads_no_clock(monkeypatch):
    """Faker's day_of_week() drew a date before now, in local time: the labs were
    booked for another day tomorrow, or on a CI runner in another time zone."""
    from faker.providers.date_time import Provider

    def clock_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the synthetic visit read Faker's clock")

    monkeypatch.setattr(Provider, "date_time", clock_read)
    monkeypatch.setattr(Provider, "unix_time", clock_read)
    lines = [
        segment.content
        for session in range(20)
        for segment in islice(
            synthetic_scenario(
                seed=0, session_id=f"s-{session}", channel_roles=None
            ).iter_segments(),
            120,
        )
    ]
    assert any("schedule the labs for" in line for line in lines)  # the line that did


def test_each_call_to_iter_segments_starts_the_visit_again():
    """iter_segments() returns a fresh iterator from the first segment each time."""
    scenario = synthetic_scenario(seed=5, session_id="x", channel_roles=None)
    assert list(islice(scenario.iter_segments(), 5)) == list(islice(scenario.iter_segments(), 5))


def test_segments_are_lazy_generator_output():
    """iter_segments() is a generator that stays suspended after the first ten segments."""
    segments = synthetic_scenario(seed=1, session_id="lazy", channel_roles=None).iter_segments()
    assert inspect.isgenerator(segments)
    assert len(list(islice(segments, 10))) == 10
    assert inspect.getgeneratorstate(segments) == inspect.GEN_SUSPENDED


def test_taking_ten_segments_generates_only_about_ten_lines(monkeypatch):
    """Creating a scenario makes no dialogue; taking 10 segments makes only ~10 lines."""
    pulled = 0
    real = synthetic._lines

    def counting(rng):
        nonlocal pulled
        for line in real(rng):
            pulled += 1
            yield line

    monkeypatch.setattr(synthetic, "_lines", counting)
    scenario = synthetic_scenario(seed=1, session_id="count", channel_roles=None)
    segments = scenario.iter_segments()
    assert pulled == 0
    list(islice(segments, 10))
    assert pulled <= 11


def test_segments_are_in_begin_order_without_overlap(whole_visit):
    """Segments come in begin order, one speaker at a time, with short gaps."""
    for before, after in pairwise(whole_visit):
        assert before.end < after.begin <= before.end + 1.2 + 1e-9


def test_segment_lengths_and_partials_are_plausible(whole_visit):
    """Each segment lasts 1.5-6 s and has 1-3 partials, and the partial count varies."""
    assert all(1.5 - 1e-9 <= s.end - s.begin <= 6.0 + 1e-9 for s in whole_visit)
    assert {s.partials for s in whole_visit} == {1, 2, 3}


def test_visit_runs_up_to_two_hours_and_no_further(whole_visit):
    """Dialogue continues after the scripted visit until about two hours of audio."""
    assert whole_visit[-1].end <= MAX_AUDIO_SECONDS
    assert whole_visit[-1].end > MAX_AUDIO_SECONDS - 30


def test_visit_covers_the_parts_of_a_consultation():
    """The scripted visit greets, takes history, medications, allergies, examines and plans."""
    text = " ".join(s.content for s in _first(40, seed=11, session_id="v")).lower()
    for part in (
        "dr.",
        "what brings you in",
        "how long",
        "medications",
        "allergies",
        "take a look",
        "back in",
    ):
        assert part in text


def test_without_channel_roles_everything_is_on_channel_zero():
    """Without channel definitions, every segment is on channel 0."""
    assert {s.channel for s in _first(50, seed=1, session_id="one")} == {0}
    assert {s.channel for s in _first(50, seed=1, session_id="one", channel_roles={})} == {0}


def test_with_channel_roles_speakers_alternate_on_their_channels():
    """With roles, the clinician speaks first on the clinician's channel, then they alternate."""
    segments = _first(50, seed=1, session_id="two", channel_roles=ROLES)
    assert [s.channel for s in segments] == [0, 1] * 25
    assert segments[0].content.startswith("Hi ") and "Dr." in segments[0].content


def test_clinician_on_channel_one_when_roles_say_so():
    """Swapped roles put the clinician's lines on channel 1."""
    swapped = _first(10, seed=1, session_id="two", channel_roles={0: "PATIENT", 1: "CLINICIAN"})
    straight = _first(10, seed=1, session_id="two", channel_roles=ROLES)
    assert [s.channel for s in swapped] == [1 - s.channel for s in straight]
    assert [s.content for s in swapped] == [s.content for s in straight]


def test_synthetic_scenario_looks_like_a_scenario():
    """It is named "synthetic", has no faults and a description, and no pre-built segments."""
    scenario = synthetic_scenario(seed=1, session_id="x", channel_roles=ROLES)
    assert isinstance(scenario, SyntheticScenario)
    assert scenario.name == "synthetic" and scenario.faults == () and scenario.description
    assert not hasattr(scenario, "segments")
