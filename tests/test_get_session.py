"""GetMedicalScribeListeningSession through the real SDK (HTTP/2) and boto3 (HTTP/1.1).

The answer is ``medicalScribeListeningSessionDetails`` exactly as the model shapes
it; errors are rest-json (status, ``x-amzn-errortype``, ``{"message"}``).
"""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aws_sdk_connecthealth import models as m
from botocore.exceptions import ClientError
from smithy_core.exceptions import CallError

from emulator.sdk import boto3_client
from emulator.server import Settings

from .support import (
    DOMAIN_ID,
    S3_URI,
    SUBSCRIPTION_ID,
    H2Client,
    admin,
    audio_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
    running_emulator,
)
from .test_stream_wire import END, config_event, headers

DETAILS_KEYS = {
    "sessionId",
    "domainId",
    "subscriptionId",
    "languageCode",
    "mediaSampleRateHertz",
    "mediaEncoding",
    "channelDefinitions",
    "postStreamActionSettings",
    "encounterContextProvided",
    "medicalCodingContextProvided",
    "streamStatus",
    "streamCreationTime",
    "streamEndTime",
    "postStreamActionResult",
}


def custom_configuration() -> m.MedicalScribeInputStreamConfigurationEvent:
    """Two channels, an encounter context and a custom DAP template with instructions."""
    return m.MedicalScribeInputStreamConfigurationEvent(
        value=m.MedicalScribeConfigurationEvent(
            post_stream_action_settings=m.MedicalScribePostStreamActionSettings(
                output_s3_uri=S3_URI,
                clinical_note_generation_settings=m.ClinicalNoteGenerationSettings(
                    note_template_settings=m.NoteTemplateSettingsCustomTemplate(
                        value=m.CustomTemplate(
                            template_type="DAP",
                            template_instructions=[
                                m.TemplateSectionInstruction(
                                    section_header="MOOD_AND_AFFECT",
                                    section_instruction="Describe the mood.",
                                )
                            ],
                        )
                    )
                ),
            ),
            channel_definitions=[
                m.MedicalScribeChannelDefinition(channel_id=0, participant_role="CLINICIAN"),
                m.MedicalScribeChannelDefinition(channel_id=1, participant_role="PATIENT"),
            ],
            encounter_context=m.EncounterContext(unstructured_context="Follow-up visit."),
        )
    )


def raw_get(base_url: str, path: str) -> tuple[int, dict[str, str], dict]:
    """GET over cleartext HTTP/1.1; return (status, headers, JSON body)."""
    try:
        with urllib.request.urlopen(base_url + path, timeout=10) as response:
            answer = {k.lower(): v for k, v in response.headers.items()}
            return response.status, answer, json.loads(response.read())
    except urllib.error.HTTPError as error:
        answer = {k.lower(): v for k, v in error.headers.items()}
        return error.code, answer, json.loads(error.read())


def session_path(session_id: str, domain_id: str = DOMAIN_ID, sub: str = SUBSCRIPTION_ID) -> str:
    return f"/medical-scribe-stream/domain/{domain_id}/subscription/{sub}/session/{session_id}"


async def sdk_get(client, session_id: str, **ids: str) -> m.MedicalScribeListeningSessionDetails:
    output = await client.get_medical_scribe_listening_session(
        input=m.GetMedicalScribeListeningSessionInput(
            session_id=session_id,
            domain_id=ids.get("domain_id", DOMAIN_ID),
            subscription_id=ids.get("subscription_id", SUBSCRIPTION_ID),
        )
    )
    return output.medical_scribe_listening_session_details


async def test_sdk_get_over_http2_returns_every_member_of_the_session(client, emulator):
    session_id = new_session_id()
    events = [custom_configuration()]
    audio = pcm_tone(1.0, channels=2)
    events += [audio_event(audio[i : i + 6400]) for i in range(0, len(audio), 6400)]
    events.append(end_of_session_event())
    result = await run_session(client, session_id, events=events)
    assert result.error is None, result.error
    got = await sdk_get(client, session_id)
    assert (got.session_id, got.domain_id, got.subscription_id) == (
        session_id,
        DOMAIN_ID,
        SUBSCRIPTION_ID,
    )
    assert (got.language_code, got.media_sample_rate_hertz, got.media_encoding) == (
        "en-US",
        16000,
        "pcm",
    )
    assert [(d.channel_id, d.participant_role) for d in got.channel_definitions] == [
        (0, "CLINICIAN"),
        (1, "PATIENT"),
    ]
    settings = got.post_stream_action_settings
    assert settings.output_s3_uri == S3_URI
    template = settings.clinical_note_generation_settings.note_template_settings
    assert isinstance(template, m.NoteTemplateSettingsResponseCustomTemplate)
    assert template.value.template_type == "DAP"
    assert got.encounter_context_provided is True
    assert got.stream_status == "COMPLETED"
    assert isinstance(got.stream_creation_time, datetime.datetime)
    assert got.stream_creation_time <= got.stream_end_time
    notes = got.post_stream_action_result.clinical_note_generation_result
    for artifact in (notes.note_result, notes.transcript_result, notes.after_visit_summary_result):
        assert artifact.status in ("IN_PROGRESS", "COMPLETED")
        assert artifact.output_location.startswith(S3_URI + "/health-agent-listening-session/")


async def test_boto3_recipe_gets_the_same_session_over_http1_on_both_ports(client, emulator):
    """emulator.sdk.boto3_client (inject_host_prefix=False) on the TLS port, and plain
    boto3 settings on the cleartext port, both read the model's shape."""
    session_id = new_session_id()
    result = await run_session(client, session_id, audio=pcm_tone(0.5), end_of_session=False)
    assert result.error is None
    # The documented recipe: https://localhost:<port>, the emulator's CA, no host prefix.
    documented = emulator.endpoint_url.replace("127.0.0.1", "localhost")
    for url, ca in ((documented, emulator.ca_file), (emulator.h2c_url, None)):
        boto = boto3_client(endpoint_url=url, ca_file=ca)
        got = boto.get_medical_scribe_listening_session(
            sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
        )
        assert len(got["ResponseMetadata"]["RequestId"]) == 36
        details = got["medicalScribeListeningSessionDetails"]
        assert details["streamStatus"] == "PAUSED"
        assert details["sessionId"] == session_id
        assert details["postStreamActionSettings"] == {
            "outputS3Uri": S3_URI,
            "clinicalNoteGenerationSettings": {
                "noteTemplateSettings": {
                    "managedTemplate": {"templateType": "HISTORY_AND_PHYSICAL"}
                }
            },
        }
        assert details["encounterContextProvided"] is False
        assert isinstance(details["streamCreationTime"], datetime.datetime)
        assert "postStreamActionResult" not in details  # no END_OF_SESSION yet


async def test_response_carries_only_model_members_and_only_the_template_type(client, emulator):
    """The custom template's instructions and the encounter context are never echoed."""
    session_id = new_session_id()
    result = await run_session(client, session_id, events=[custom_configuration()])
    assert result.error is None
    status, answer_headers, body = raw_get(emulator.h2c_url, session_path(session_id))
    assert status == 200 and answer_headers["content-type"] == "application/json"
    details = body["medicalScribeListeningSessionDetails"]
    assert set(details) <= DETAILS_KEYS
    assert details["postStreamActionSettings"]["clinicalNoteGenerationSettings"] == {
        "noteTemplateSettings": {"customTemplate": {"templateType": "DAP"}}
    }
    text = json.dumps(body)
    assert "Describe the mood" not in text and "Follow-up visit" not in text
    assert isinstance(details["streamCreationTime"], float)  # rest-json: epoch seconds
    # With milliseconds, as AWS sends them and as the domains' times were: the
    # stream's times had the clock's full float (1796664846.9917705).
    for name in ("streamCreationTime", "streamEndTime"):
        assert details[name] == round(details[name], 3), (name, details[name])


async def test_unknown_session_is_resource_not_found_for_sdk_boto3_and_the_wire(client, emulator):
    missing = new_session_id()
    with pytest.raises(m.ResourceNotFoundException) as info:
        await sdk_get(client, missing)
    assert missing in info.value.message
    boto = boto3_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    with pytest.raises(ClientError) as error:
        boto.get_medical_scribe_listening_session(
            sessionId=missing, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
        )
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    status, answer_headers, body = raw_get(emulator.h2c_url, session_path(missing))
    assert status == 404
    assert answer_headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert set(body) == {"message"}
    # boto3 reads the request id from x-amzn-requestid, of errors as of answers.
    request_id = error.value.response["ResponseMetadata"]["RequestId"]
    assert request_id and len(request_id) == 36


async def test_a_session_is_keyed_by_all_three_ids(client, emulator):
    session_id = new_session_id()
    assert (await run_session(client, session_id, audio=pcm_tone(0.2))).error is None
    with pytest.raises(m.ResourceNotFoundException):
        await sdk_get(client, session_id, subscription_id="sub-ZZZZZZZZZZ0123456789x")


async def test_head_of_a_session_answers_as_get_without_a_body(client, emulator):
    session_id = new_session_id()
    assert (await run_session(client, session_id, audio=pcm_tone(0.2))).error is None
    for sid, status in ((session_id, 200), (new_session_id(), 404)):
        request = urllib.request.Request(emulator.h2c_url + session_path(sid), method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                got, answer, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            got, answer, body = error.code, error.headers, error.read()
        assert (got, body) == (status, b"")
        assert int(answer["content-length"]) > 0  # the GET's length, as HTTP says
        assert answer["x-amzn-requestid"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_another_method_on_a_session_path_is_a_405_naming_get(emulator, method):
    """Was a bare 404 "no route", as if the path were wrong."""
    path = session_path(new_session_id())
    request = urllib.request.Request(
        emulator.h2c_url + path, data=b"{}" if method != "DELETE" else None, method=method
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 405
    assert error.value.headers["allow"] == "GET, HEAD"
    assert error.value.headers["x-amzn-errortype"] == "UnknownOperationException"
    # Under both names, as the path's GET and HEAD answers carry it.
    request_id = error.value.headers["x-amzn-requestid"]
    assert request_id and error.value.headers["x-amzn-request-id"] == request_id
    assert json.loads(error.value.read()) == {
        "message": f"{method} is not allowed on {path}; it takes GET, HEAD "
        "(GetMedicalScribeListeningSession)"
    }


def test_a_session_path_with_a_trailing_slash_is_no_route_naming_the_path_meant(emulator):
    """It was answered as if the slash were not there, where every other
    operation's path is a 404 naming the path meant."""
    path = session_path(new_session_id())
    status, body = admin(emulator.h2c_url, "GET", path + "/")
    assert status == 404
    assert body == {
        "message": f"no route for GET {path}/ (did you mean {path}, without the trailing slash?)"
    }


def test_an_empty_session_id_in_the_path_is_too_short_as_other_empty_labels_are(emulator):
    """It read as a missing value ("Value null ... must not be null"), where an empty
    label on the other operations' paths is a value too short."""
    path = session_path("")
    status, body = admin(emulator.h2c_url, "GET", path)
    assert status == 400
    assert body["message"].startswith(
        "2 validation errors detected: Value '' at 'sessionId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 36; "
    )


SOME_SESSION = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("domain_id", "subscription_id", "session_id", "named"),
    [
        # Lengths are right (botocore checks those itself), patterns wrong.
        ("DOM-ABCDEFGHIJ0123456789", SUBSCRIPTION_ID, SOME_SESSION, "domainId"),
        (DOMAIN_ID, "sub-_____________________", SOME_SESSION, "subscriptionId"),
        (DOMAIN_ID, SUBSCRIPTION_ID, "x" * 36, "sessionId"),
    ],
    ids=["domainId", "subscriptionId", "sessionId"],
)
def test_invalid_path_parameters_are_a_validation_exception_naming_them(
    emulator, domain_id, subscription_id, session_id, named
):
    status, answer_headers, body = raw_get(
        emulator.h2c_url, session_path(session_id, domain_id, subscription_id)
    )
    assert status == 400
    assert answer_headers["x-amzn-errortype"] == "ValidationException"
    assert f"at '{named}'" in body["message"]
    boto = boto3_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    with pytest.raises(ClientError) as error:
        boto.get_medical_scribe_listening_session(
            sessionId=session_id, domainId=domain_id, subscriptionId=subscription_id
        )
    assert error.value.response["Error"]["Code"] == "ValidationException"


async def test_sdk_get_of_a_malformed_id_is_a_call_error_without_the_message(client, emulator):
    """The operation models no ValidationException: the SDK raises a generic
    CallError with the status and shape id, and drops the message naming the
    field (README, "Behaviour of the real SDK worth knowing"); boto3 keeps it."""
    with pytest.raises(CallError) as failure:
        await sdk_get(client, "x" * 36)
    text = str(failure.value)
    assert "status: 400" in text and "#ValidationException" in text
    assert "sessionId" not in text


def test_medical_coding_context_and_code_generation_are_reported(emulator):
    """The newer model members (boto3 knows them; SDK 0.12 does not): a coding context
    provided, code generation enabled, and its result (SKIPPED: no codes are made)."""
    config = {
        "postStreamActionSettings": {
            "outputS3Uri": S3_URI,
            "clinicalNoteGenerationSettings": {
                "noteTemplateSettings": {"managedTemplate": {"templateType": "PHYSICAL_SOAP"}}
            },
            "medicalCodeGenerationSettings": {"enabled": True},
        },
        "encounterContext": {"medicalCodingContext": {"encounterType": "TELEHEALTH"}},
    }
    session_id = new_session_id()
    h2 = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = h2.request(headers(session_id))
        h2.send(stream, config_event(config) + END, end_stream=True)
        assert h2.wait(stream)["ended"]
    finally:
        h2.close()
    boto = boto3_client(endpoint_url=emulator.h2c_url)
    details = boto.get_medical_scribe_listening_session(
        sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
    )["medicalScribeListeningSessionDetails"]
    assert details["medicalCodingContextProvided"] is True
    assert details["encounterContextProvided"] is True
    assert details["postStreamActionSettings"]["medicalCodeGenerationSettings"] == {"enabled": True}
    codes = details["postStreamActionResult"]["medicalCodeGenerationResult"]["medicalCodesResult"]
    assert codes["status"] == "SKIPPED" and codes["failureReason"]


def test_strict_resources_refuse_streams_on_unknown_or_inactive_resources_gets_on_unknown(
    tmp_path,
):
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=Path(tmp_path), strict_resources=True
    )
    with running_emulator(settings) as running:
        boto = boto3_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
        domain_id = boto.create_domain(name="strict-clinic")["domainId"]
        subscription_id = boto.create_subscription(domainId=domain_id)["subscriptionId"]

        def stream(session_id: str, sub: str = subscription_id, dom: str = domain_id) -> dict:
            h2 = H2Client("127.0.0.1", running.h2c_port)
            try:
                wanted = {
                    "x-amzn-medscribe-domain-id": dom,
                    "x-amzn-medscribe-subscription-id": sub,
                }
                stream_id = h2.request(headers(session_id, **wanted))
                h2.send(stream_id, config_event() + END, end_stream=True)
                return h2.wait(stream_id)
            finally:
                h2.close()

        known = new_session_id()
        assert stream(known)["headers"][":status"] == "200"
        status, _, _ = raw_get(running.h2c_url, session_path(known, domain_id, subscription_id))
        assert status == 200
        unknown = stream(new_session_id(), dom="dom-nosuchdomain000000")
        assert unknown["headers"][":status"] == "404"
        assert unknown["headers"]["x-amzn-errortype"] == "ResourceNotFoundException"
        boto.deactivate_subscription(domainId=domain_id, subscriptionId=subscription_id)
        inactive = stream(new_session_id())
        assert inactive["headers"][":status"] == "400"
        assert "INACTIVE" in json.loads(inactive["data"])["message"]
        # A look-up still reads the sessions of a deactivated subscription.
        got = boto.get_medical_scribe_listening_session(
            sessionId=known, domainId=domain_id, subscriptionId=subscription_id
        )
        assert got["medicalScribeListeningSessionDetails"]["sessionId"] == known
        with pytest.raises(ClientError) as error:
            boto.get_medical_scribe_listening_session(
                sessionId=known, domainId="dom-nosuchdomain000000", subscriptionId=subscription_id
            )
        assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


# -- rules on look-ups ---------------------------------------------------------------

GET_OPERATION = "GetMedicalScribeListeningSession"


def get_rule(emulator, session_id: str, error: dict, **more) -> dict:
    rule = {"match": {"sessionId": session_id, "operation": GET_OPERATION}, "error": error}
    status, body = admin(emulator.h2c_url, "POST", "/_emulator/rules", {**rule, **more})
    assert status == 201, body
    return body


async def test_a_get_rule_refuses_look_ups_its_times_then_the_session_is_read(
    client, emulator, caplog
):
    """For testing a status poller: the service's 500 on Get, scripted per session.
    The SDK retries a 500 by itself, so one attempt sees it; its stream is untouched."""
    from .test_quotas import _one_attempt_client

    caplog.set_level("INFO", logger="medscribe")
    session_id = new_session_id()
    added = get_rule(
        emulator, session_id, {"type": "InternalServerException", "message": "try again"}, times=1
    )
    result = await run_session(client, session_id, audio=pcm_tone(0.5))
    assert result.error is None, repr(result.error)  # a stream is no look-up
    once, request = await _one_attempt_client(emulator)
    try:
        with pytest.raises(m.InternalServerException) as refused:
            await sdk_get(once, session_id)
        assert refused.value.message == "try again"
        details = await sdk_get(once, session_id)
        assert details.stream_status == "COMPLETED"
    finally:
        await once._config.transport.close()
    (line,) = [r.getMessage() for r in caplog.records if f"by rule {added['id']}" in r.getMessage()]
    assert f"rejected: InternalServerException (GET {session_path(session_id)}) by rule" in line


async def test_the_sdks_retries_ride_out_a_get_rule_and_boto3_sees_its_status(client, emulator):
    """Two throttles, which the SDK's own retries absorb (both uses spent); through
    boto3 with its retries off (as the README says), a throttle, then a 402, on a
    session that does not exist."""
    from botocore.config import Config

    session_id = new_session_id()
    throttle = get_rule(emulator, session_id, {"type": "ThrottlingException"}, times=2)
    with pytest.raises(m.ResourceNotFoundException):  # its third attempt: not found
        await sdk_get(client, session_id)
    status, listed = admin(emulator.h2c_url, "GET", "/_emulator/rules")
    (spent,) = [rule for rule in listed["rules"] if rule["id"] == throttle["id"]]
    assert status == 200 and spent["uses"] == 2 and spent["remaining"] == 0
    boto = boto3_client(
        endpoint_url=emulator.h2c_url, config=Config(retries={"total_max_attempts": 1})
    )
    get_rule(emulator, session_id, {"type": "ThrottlingException"}, times=1)
    with pytest.raises(ClientError) as throttled:  # boto3 would retry it, and pass
        boto.get_medical_scribe_listening_session(
            sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
        )
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    get_rule(emulator, session_id, {"type": "ServiceQuotaExceededException", "message": "full"})
    with pytest.raises(ClientError) as error:
        boto.get_medical_scribe_listening_session(
            sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
        )
    assert error.value.response["Error"] == {
        "Code": "ServiceQuotaExceededException",
        "Message": "full",
    }
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402


def test_a_pollers_gets_draw_a_get_rules_probability_anew(emulator):
    """Each Get of a session draws again (the count of its look-ups, those before
    the rule included, is in the draw), the same way in every run."""
    from emulator.rules import RuleBook, parse_rule

    backend = emulator.app.backend
    rule = {
        "match": {"operation": GET_OPERATION},
        "error": {"type": "ThrottlingException"},
        "probability": 0.5,
    }
    book = RuleBook(seed=backend.seed)
    book.add(parse_rule(rule, scenarios={}))
    ids = {"domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID}

    def draws(session_id: str) -> list[bool]:
        return [
            book.match(session_id=session_id, **ids, asks=k, operation=GET_OPERATION) is not None
            for k in range(8)
        ]

    def telling(session_id: str) -> bool:
        """Both answers come, and counting from the rule on would draw otherwise."""
        drawn = draws(session_id)
        return len(set(drawn[2:])) == 2 and drawn[2:] != drawn[:6]

    session_id = next(s for s in iter(new_session_id, None) if telling(s))
    for _ in range(2):  # looked up before the rule: counted all the same
        assert raw_get(emulator.h2c_url, session_path(session_id))[0] == 404
    status, body = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    answers = [raw_get(emulator.h2c_url, session_path(session_id))[0] for _ in range(6)]
    assert [status == 429 for status in answers] == draws(session_id)[2:]
    assert all(status in (404, 429) for status in answers)
