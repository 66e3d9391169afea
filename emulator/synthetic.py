"""Synthetic visits: a plausible clinician/patient conversation, made up lazily.

The default scenario when no rule applies. Segments are generated one at a
time, in begin order, as the session asks for them: a session may last two
hours of audio and hundreds may start per second, so nothing is built up front.

Everything random comes from one :class:`random.Random` seeded with
``sha256(seed, session_id)`` (:func:`emulator.ids.session_rng`), so the same seed
and session id always give the same visit. Names, jobs, cities and weekdays come
from Faker, re-seeded from that source before each use; the medical vocabulary
comes from the small lists below. No real patient data.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from faker import Faker

from .ids import session_rng
from .scenario import MAX_AUDIO_SECONDS, RESERVED_NAME, Fault, Segment

__all__ = [
    "SYNTHETIC_NAME",
    "MAX_AUDIO_SECONDS",  # emulator.scenario's limit, re-exported (an alias)
    "SyntheticScenario",
    "warm_up",
    "synthetic_scenario",
]

#: The generated visit's name: :data:`emulator.scenario.RESERVED_NAME` (which a
#: scenario file may not take), under the name the server uses.
SYNTHETIC_NAME = RESERVED_NAME


# Utterance timing: about 2.7 words per second of conversational speech,
# each utterance 1.5-6 s long, with a short pause before the next speaker.
_SECONDS_PER_WORD = 0.37
_MIN_UTTERANCE, _MAX_UTTERANCE = 1.5, 6.0
_MIN_GAP, _MAX_GAP = 0.2, 1.2

CLINICIAN, PATIENT = "CLINICIAN", "PATIENT"

# (complaint, how the patient says it, area, associated symptom, exam, assessment, plan)
_COMPLAINTS = (
    (
        "a cough",
        "this cough that won't go away",
        "chest",
        "a low-grade fever",
        "Your lungs sound clear on both sides, no wheezing.",
        "This looks like a viral upper respiratory infection.",
        "Rest, plenty of fluids, and honey or lozenges for the cough.",
    ),
    (
        "headaches",
        "these headaches, mostly in the afternoon",
        "forehead",
        "some sensitivity to light",
        "Your neurological exam is normal and your blood pressure is fine.",
        "These sound like tension-type headaches.",
        "Regular meals, water, screen breaks, and ibuprofen when needed.",
    ),
    (
        "lower back pain",
        "pain in my lower back since I moved some furniture",
        "lower back",
        "tightness down the back of my leg",
        "There's tenderness over the muscles, but strength and reflexes are normal.",
        "This is most likely a lumbar muscle strain.",
        "Gentle stretching, heat, and physical therapy for a few weeks.",
    ),
    (
        "a sore throat",
        "a really sore throat",
        "throat",
        "swollen glands",
        "Your throat is red and the tonsils are a bit swollen, no white patches.",
        "I think this is viral pharyngitis, but let's do a rapid strep test.",
        "Salt water gargles, fluids, and acetaminophen for the pain.",
    ),
    (
        "knee pain",
        "my right knee, it hurts on the stairs",
        "right knee",
        "some swelling in the evening",
        "There's mild swelling, no instability, and the range of motion is good.",
        "This looks like patellofemoral pain, maybe some early arthritis.",
        "Ice after activity, quad strengthening, and an x-ray to be thorough.",
    ),
    (
        "heartburn",
        "burning in my chest after dinner",
        "upper stomach",
        "a sour taste in the morning",
        "Your abdomen is soft, just a little tender up here.",
        "This sounds like acid reflux.",
        "Smaller evening meals, no food two hours before bed, and a trial of omeprazole.",
    ),
    (
        "dizziness",
        "dizzy spells when I get out of bed",
        "head",
        "a little nausea",
        "Your ears look normal, and the positional test reproduces the dizziness.",
        "This is most consistent with benign positional vertigo.",
        "I'll show you some repositioning exercises to do at home.",
    ),
    (
        "a rash",
        "an itchy rash on my forearm",
        "left forearm",
        "dry, flaky skin",
        "It's a red, scaly patch with clear borders, no signs of infection.",
        "This looks like contact dermatitis.",
        "A mild steroid cream twice a day and a fragrance-free moisturizer.",
    ),
)
_MEDICATIONS = (
    "lisinopril ten milligrams once a day",
    "metformin five hundred milligrams twice a day",
    "atorvastatin twenty milligrams at night",
    "levothyroxine fifty micrograms every morning",
    "amlodipine five milligrams daily",
    "sertraline fifty milligrams daily",
    "an albuterol inhaler when I need it",
    "omeprazole twenty milligrams before breakfast",
    "a daily multivitamin",
    "vitamin D once a week",
)
_ALLERGIES = (
    ("penicillin", "I break out in hives"),
    ("sulfa drugs", "I got a rash"),
    ("codeine", "it makes me really nauseous"),
    ("amoxicillin", "my face swelled up a little"),
)
_DURATIONS = ("about three days", "almost a week", "two weeks now", "since last weekend")
_ONSETS = ("It came on pretty suddenly.", "It built up gradually.", "It just crept up on me.")
_RELIEF = ("Resting helps a bit.", "Ibuprofen takes the edge off.", "Nothing really helps.")
_ANSWERS = ("Yes, a little.", "Now that you mention it, yes.", "No, not really.")
_NUMBERS = ("three", "four", "five", "six", "seven")
_PRESSURES = ("one twenty", "one twenty-five", "one thirty", "one thirty-five")
_INTERVALS = ("two weeks", "four weeks", "a month", "six weeks")
_LABS = ("a basic metabolic panel", "a complete blood count", "a lipid panel", "an A1C")
_SPECIALTIES = ("physical therapy", "dermatology", "cardiology", "sleep medicine")
_HABITS = (
    ("How's your sleep been lately?", "Not great, maybe five or six hours a night."),
    ("Are you getting any exercise?", "I walk the dog most mornings, about twenty minutes."),
    ("How's your diet these days?", "I've been eating out more than I should."),
    ("Do you smoke or vape at all?", "No, I quit about five years ago."),
    ("How much alcohol do you drink in a week?", "Maybe a glass of wine on the weekend."),
    ("How's your stress level?", "Work has been busy, but it's manageable."),
)

_local = threading.local()


def _faker(seed: int) -> Faker:
    """Return this thread's Faker, re-seeded: creating one per session costs milliseconds.

    Names are drawn uniformly from Faker's lists: weighted by frequency, each
    draw rebuilt the cumulative weights of thousands of names, 2.9M instructions
    for a visit's cast against 0.36M, the largest fixed cost of a session.
    """
    fake = getattr(_local, "faker", None)
    if fake is None:
        fake = _local.faker = Faker("en_US", use_weighting=False)
    fake.seed_instance(seed)
    return fake


def warm_up() -> None:
    """Load Faker's providers now, before any session needs them.

    Building the first Faker imports a few dozen provider modules, each a file
    to open: done during a session, a process short of file descriptors (a
    burst of connections under a low ``ulimit -n``) failed that session for
    good with an internal error. Once imported, a thread's Faker opens no files.
    """
    _faker(0)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Cast:
    doctor: str
    patient: str
    job: str
    city: str
    complaint: tuple[str, ...]


def _cast(rng: random.Random) -> _Cast:
    fake = _faker(rng.getrandbits(64))
    return _Cast(
        doctor=fake.last_name(),
        patient=fake.first_name(),
        job=_job(fake.job()),
        city=fake.city(),
        complaint=rng.choice(_COMPLAINTS),
    )


def _job(title: str) -> str:
    """Return Faker's "Engineer, civil (consulting)" style titles as "a civil engineer"."""
    title = title.split(" (")[0]
    if ", " in title:
        noun, qualifier = title.split(", ", 1)
        title = f"{qualifier} {noun}"
    title = title.lower().replace("/", " and ")
    return f"{'an' if title[:1] in 'aeiou' else 'a'} {title}"


def _visit(rng: random.Random, cast: _Cast) -> Iterator[tuple[str, str]]:
    """Yield the scripted visit as (clinician line, patient line) exchanges."""
    what, said, area, associated, exam, assessment, plan = cast.complaint
    meds = rng.sample(_MEDICATIONS, 2)
    allergy, reaction = rng.choice(_ALLERGIES)
    # Greeting and chief complaint.
    yield (
        f"Hi {cast.patient}, I'm Dr. {cast.doctor}. How are you doing today?",
        "Hi, doctor. Honestly, I've been better.",
    )
    yield ("I'm sorry to hear that. What brings you in?", f"I've been dealing with {said}.")
    # History of present illness.
    yield ("How long has that been going on?", f"It's been {rng.choice(_DURATIONS)}.")
    yield ("Did it start suddenly, or gradually?", rng.choice(_ONSETS))
    yield (
        "On a scale of zero to ten, how bad is it at its worst?",
        f"I'd say about a {rng.choice(_NUMBERS)}.",
    )
    yield ("Does anything make it better or worse?", rng.choice(_RELIEF))
    yield (f"Have you noticed {associated}?", rng.choice(_ANSWERS))
    # Medications and allergies.
    yield ("What medications are you taking right now?", f"I take {meds[0]} and {meds[1]}.")
    yield ("Any over-the-counter medicines or supplements?", "Just ibuprofen once in a while.")
    yield ("Any allergies to medications?", f"Yes, {allergy}. {reaction.capitalize()}.")
    yield ("Okay, I've noted that in your chart.", "Thanks.")
    # Social history.
    yield ("What do you do for work?", f"I work as {cast.job} over in {cast.city}.")
    yield rng.choice(_HABITS)
    # Exam.
    yield (f"Let me take a look at your {area}. Tell me if this hurts.", "A little, right there.")
    yield (exam, "Is that a good sign?")
    # Assessment and plan.
    yield (f"It is. {assessment}", "Okay. So what do we do about it?")
    yield (plan, "That sounds doable.")
    yield (f"I'd also like to get {rng.choice(_LABS)} since you're due.", "Sure, that's fine.")
    # Follow-up.
    yield (
        f"Let's see you back in {rng.choice(_INTERVALS)}, or sooner if it gets worse.",
        f"Will do. Thank you, Dr. {cast.doctor}.",
    )


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _follow_up(rng: random.Random, cast: _Cast) -> Iterator[tuple[str, str]]:
    """Yield plausible after-visit exchanges forever; the caller stops at the time limit."""
    what = cast.complaint[0]
    while True:
        topic = rng.randrange(8)
        if topic == 0:
            yield rng.choice(_HABITS)
        elif topic == 1:
            med = rng.choice(_MEDICATIONS)
            yield ("Any side effects from your medications?", f"Not really. I'm on {med}.")
            yield ("Do you need any refills today?", rng.choice(("Yes, please.", "No, I'm good.")))
        elif topic == 2:
            fake = _faker(rng.getrandbits(64))
            specialty = rng.choice(_SPECIALTIES)
            yield (
                f"I'd like you to see Dr. {fake.last_name()} in {specialty}.",
                "Okay. Will their office call me?",
            )
            yield ("Yes, usually within a week.", "Great, thank you.")
        elif topic == 3:
            fake = _faker(rng.getrandbits(64))
            yield (
                "Which pharmacy should I send the prescription to?",
                f"The one on {fake.street_name()}, please.",
            )
        elif topic == 4:
            # Not Faker's day_of_week(): it draws a date before now, in local
            # time, so the same visit named another day tomorrow or in another
            # time zone. The same bits are drawn, so the rest of the visit stays.
            day = _WEEKDAYS[rng.getrandbits(64) % 7]
            yield (
                "Do you have any other questions for me?",
                f"Could we schedule the labs for {day}?",
            )
            yield ("Of course. The front desk can set that up.", "Perfect.")
        elif topic == 5:
            yield (
                f"Since we started the plan, how has the {what.removeprefix('a ')} been?",
                rng.choice(("A bit better each day.", "About the same, honestly.", "Much better.")),
            )
            yield ("Good. Keep doing what you're doing.", "I will.")
        elif topic == 6:
            yield (
                "Have you been checking your blood pressure at home?",
                f"Yes, it's been around {rng.choice(_PRESSURES)} over eighty.",
            )
        else:
            yield (
                "Are you up to date on your flu shot?",
                rng.choice(("I think so.", "Not yet this year.", "I'm not sure, honestly.")),
            )


def _lines(rng: random.Random) -> Iterator[tuple[str, str]]:
    """Yield (role, text), alternating clinician then patient, visit first then follow-up."""
    cast = _cast(rng)
    for source in (_visit(rng, cast), _follow_up(rng, cast)):
        for clinician, patient in source:
            yield CLINICIAN, clinician
            yield PATIENT, patient


@dataclass(frozen=True, kw_only=True, slots=True)
class SyntheticScenario:
    """A generated visit for one (seed, session id); segments are produced on demand.

    ``channel_roles`` maps channel id to participant role (``CLINICIAN`` or
    ``PATIENT``), as the session's channel definitions do; empty means one channel.
    """

    seed: int
    session_id: str
    channel_roles: tuple[tuple[int, str], ...] = ()
    name: str = field(default=SYNTHETIC_NAME, init=False)
    description: str = field(
        default="A generated clinician/patient visit, deterministic per seed and session id",
        init=False,
    )
    faults: tuple[Fault, ...] = field(default=(), init=False)

    def channel_of(self, role: str) -> int:
        """Return the channel ``role`` speaks on: its defined channel, else 0 without roles."""
        roles = dict(self.channel_roles)
        if not roles:
            return 0
        for channel, defined in sorted(roles.items()):
            if defined.upper() == role:
                return channel
        # Role not defined: take the channel the other role does not use.
        other = CLINICIAN if role == PATIENT else PATIENT
        taken = [channel for channel, defined in roles.items() if defined.upper() == other]
        return 1 - taken[0] if taken else 0

    def iter_segments(self) -> Iterator[Segment]:
        """Return a fresh generator of segments in begin order, ending by two hours of audio.

        Each call starts the same visit again from the beginning.
        """
        rng = session_rng(self.seed, self.session_id, "synthetic")
        channels = {CLINICIAN: self.channel_of(CLINICIAN), PATIENT: self.channel_of(PATIENT)}
        return self._generate(rng, channels)

    @staticmethod
    def _generate(rng: random.Random, channels: Mapping[str, int]) -> Iterator[Segment]:
        clock = round(rng.uniform(0.3, 1.5), 3)
        for role, text in _lines(rng):
            spoken = len(text.split()) * _SECONDS_PER_WORD + rng.uniform(-0.3, 0.6)
            length = min(max(spoken, _MIN_UTTERANCE), _MAX_UTTERANCE)
            end = round(clock + length, 3)
            if end > MAX_AUDIO_SECONDS:
                return
            yield Segment(
                channel=channels[role],
                begin=clock,
                end=end,
                content=text,
                partials=rng.randint(1, 3),
            )
            clock = round(end + rng.uniform(_MIN_GAP, _MAX_GAP), 3)


def synthetic_scenario(
    *, seed: int, session_id: str, channel_roles: Mapping[int, str] | None = None
) -> SyntheticScenario:
    """Return the synthetic visit for ``(seed, session_id)``; no segment is made yet.

    ``channel_roles`` (e.g. ``{0: "CLINICIAN", 1: "PATIENT"}``) puts each
    speaker on their channel; ``None`` or empty puts everything on channel 0.
    """
    roles = tuple(sorted((int(ch), str(role)) for ch, role in (channel_roles or {}).items()))
    return SyntheticScenario(seed=seed, session_id=session_id, channel_roles=roles)
