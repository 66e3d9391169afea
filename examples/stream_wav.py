"""Stream a 16-bit PCM WAV file to the medscribe emulator and print the final transcript.

    MEDSCRIBE_ENDPOINT=https://localhost:8443 MEDSCRIBE_CA_FILE=.medscribe/ca.pem \
        python examples/stream_wav.py speech.wav
"""

import asyncio
import os
import sys
import uuid
import wave

try:
    from aws_sdk_connecthealth import models as m
except ImportError:
    sys.exit("this example needs the AWS SDK: pip install 'medscribe-emulator[sdk]'")

from emulator.sdk import make_client

# The endpoint override: production code would leave it out and use real credentials.
ENDPOINT = os.environ.get("MEDSCRIBE_ENDPOINT", "https://localhost:8443")
CA_FILE = os.environ.get("MEDSCRIBE_CA_FILE")  # the emulator's CA; unset: system trust store


def quiet_crt(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    # After the service ends a stream early, awscrt's own body-writer task fails
    # with AWS_ERROR_HTTP_STREAM_HAS_COMPLETED and nobody retrieves it: skip that.
    if "HTTP_STREAM_HAS_COMPLETED" not in str(context.get("exception")):
        loop.default_exception_handler(context)


async def main(path: str) -> None:
    asyncio.get_running_loop().set_exception_handler(quiet_crt)
    with wave.open(path, "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:  # else its timing is wrong
            raise SystemExit(f"{path}: this example streams mono 16-bit WAV only")
        rate, audio = wav.getframerate(), wav.readframes(-1)
    settings = m.MedicalScribePostStreamActionSettings(
        output_s3_uri="s3://my-bucket/scribe",
        clinical_note_generation_settings=m.ClinicalNoteGenerationSettings(
            note_template_settings=m.NoteTemplateSettingsManagedTemplate(
                value=m.ManagedTemplate(template_type="HISTORY_AND_PHYSICAL")
            )
        ),
    )
    ids = {
        "session_id": str(uuid.uuid4()),
        "domain_id": "dom-exampledomain0001",
        "subscription_id": "sub-ExampleSubscription01",
    }
    async with await make_client(endpoint_url=ENDPOINT, ca_file=CA_FILE) as client:
        stream = await client.start_medical_scribe_listening_session(
            input=m.StartMedicalScribeListeningSessionInput(
                **ids,
                language_code="en-US",
                media_sample_rate_hertz=rate,
                media_encoding="pcm",
            )
        )

        sent_all = False  # every audio event went (the reset may come in the close)

        async def send() -> None:
            nonlocal sent_all
            await stream.input_stream.send(
                m.MedicalScribeInputStreamConfigurationEvent(
                    value=m.MedicalScribeConfigurationEvent(post_stream_action_settings=settings)
                )
            )
            step = rate * 2 // 10  # 100 ms of 16-bit mono audio per event
            for i in range(0, len(audio), step):
                await stream.input_stream.send(
                    m.MedicalScribeInputStreamAudioEvent(
                        value=m.MedicalScribeAudioEvent(audio_chunk=audio[i : i + step])
                    )
                )
            sent_all = True
            await stream.input_stream.send(
                m.MedicalScribeInputStreamSessionControlEvent(
                    value=m.MedicalScribeSessionControlEvent(type="END_OF_SESSION")
                )
            )
            await stream.input_stream.close()

        sender = asyncio.create_task(send())
        _, events = await stream.await_output()
        async for event in events:
            segment = getattr(getattr(event, "value", None), "transcript_segment", None)
            if segment is not None and not segment.is_partial:
                print(f"[{segment.audio_begin_offset:6.1f}s] {segment.content}", flush=True)
        # After a reset stream the SDK's input side never returns: bound the wait.
        done, _ = await asyncio.wait({sender}, timeout=5)
        if not done:
            while not sender.done():  # a sender in close() needs a second cancel
                sender.cancel()
                await asyncio.wait({sender}, timeout=0.1)
            if not sent_all:
                sys.exit("error: the stream was reset before all audio was sent")
        else:
            sender.result()  # the sender's own error, if it had one
        # The output ends the same way, with no exception, when the stream was reset
        # after the last audio went out (the sender stuck in its END_OF_SESSION or
        # close, or done): the session's status tells the two apart.
        got = await client.get_medical_scribe_listening_session(
            input=m.GetMedicalScribeListeningSessionInput(**ids)
        )
        status = got.medical_scribe_listening_session_details.stream_status
        if status != "COMPLETED":
            sys.exit(f"error: the stream ended with the session {status}, not COMPLETED")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: stream_wav.py FILE.wav")
    try:
        asyncio.run(main(sys.argv[1]))
    except Exception as error:  # modeled errors carry .message; others their str()
        sys.exit(f"error: {type(error).__name__}: {getattr(error, 'message', error)}")
