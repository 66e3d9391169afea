# medscribe-emulator container image.
#
#   docker build -t medscribe-emulator .            # the emulator (default target)
#   docker build -t medscribe-example --target client .
#
# The emulator listens on 0.0.0.0: 8443 (TLS, h2 + http/1.1) and 8080 (cleartext,
# h2c + http/1.1). Its CA certificate is written to /var/lib/medscribe/ca.pem, a
# volume, so client containers can mount the same volume and trust it. Every
# option is an environment variable (MEDSCRIBE_<OPTION>, see `--help`).

ARG PYTHON_IMAGE=python:3.12-slim

# -- build: a virtualenv with the emulator and its dependencies ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for emulator._speedups (the CRC-32 and base64 loops of the audio
# path). Only this stage has it: the runtime stages copy the built virtualenv.
# Unpinned on purpose: any Debian gcc builds the one C file.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY emulator/ emulator/
COPY fixtures/ fixtures/
RUN python -m venv /opt/medscribe \
    && /opt/medscribe/bin/pip install --no-cache-dir .

# -- client-build: the same, plus the real AWS SDK the example client uses -----
FROM build AS client-build
# Keep in step with the pin in pyproject.toml's test extra (a test checks it).
RUN /opt/medscribe/bin/pip install --no-cache-dir aws-sdk-connecthealth==0.12.0

# -- client: runs examples/stream_wav.py against an emulator -------------------
FROM ${PYTHON_IMAGE} AS client
# Its own non-root user: it only needs to read ca.pem from the shared volume.
RUN groupadd --system --gid 10002 medscribe-client \
    && useradd --system --no-log-init --uid 10002 --gid 10002 \
        --home-dir /app --shell /usr/sbin/nologin medscribe-client
COPY --from=client-build /opt/medscribe /opt/medscribe
ENV PATH=/opt/medscribe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY examples/ examples/
USER 10002:10002
CMD ["python", "examples/stream_wav.py", "examples/audio/tone.wav"]

# -- emulator: the default target ----------------------------------------------
FROM ${PYTHON_IMAGE} AS emulator
# The state directory is created here, owned by the runtime user, before it is
# declared a VOLUME: a new named volume copies it, ownership included, so the
# non-root emulator can write its CA there.
RUN groupadd --system --gid 10001 medscribe \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /var/lib/medscribe --shell /usr/sbin/nologin medscribe \
    && mkdir -p /var/lib/medscribe \
    && chown 10001:10001 /var/lib/medscribe \
    && chmod 0755 /var/lib/medscribe
COPY --from=build /opt/medscribe /opt/medscribe
COPY docker/healthcheck.py /usr/local/lib/medscribe/healthcheck.py
ENV PATH=/opt/medscribe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDSCRIBE_HOST=0.0.0.0 \
    MEDSCRIBE_PORT=8443 \
    MEDSCRIBE_H2C_PORT=8080 \
    MEDSCRIBE_STATE_DIR=/var/lib/medscribe
VOLUME ["/var/lib/medscribe"]
USER 10001:10001
EXPOSE 8443 8080
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/lib/medscribe/healthcheck.py"]
ENTRYPOINT ["medscribe-emulator"]
CMD ["serve"]
