"""HTTP/1.1 requests hypercorn cannot parse, answered in the service's error shape.

When h11 cannot read a request (a malformed request line, header field or
chunked body, or a request line and header block past
``h11_max_incomplete_size``, 16 KiB),
hypercorn answers 400 or 431 with an empty body, which boto3 reports as a bare
status with no reason. :func:`install` makes it the REST-JSON shape every other
refusal has: ``x-amzn-errortype: ValidationException`` and ``{"message": ...}``
saying what was wrong and, for 431, the limit. h11's own message is not quoted:
it holds the request's bytes, which may carry a credential.
"""

from __future__ import annotations

import json
from itertools import chain

import h11
from hypercorn.protocol.h11 import H11Protocol

from .ids import new_request_id

#: What each status hypercorn's h11 refusals carry means for the client, while
#: the request's head is read...
_HEAD_MESSAGES = {
    400: "the request could not be read as HTTP/1.1: its request line or a header "
    "field is malformed (RFC 9112)",
    431: "the request line and header fields are larger than this server reads over "
    "HTTP/1.1 ({limit} bytes); shorten the headers, or use HTTP/2",
}
#: ...and once it was read, while its body is.
_BODY_MESSAGES = {
    400: "the request body could not be read as HTTP/1.1: its chunked encoding is "
    "malformed, or it ended before its content-length (RFC 9112)",
    431: "a line of the request body's chunked encoding is longer than this server "
    "reads over HTTP/1.1 ({limit} bytes)",
}


async def _send_error_response(self: H11Protocol, status_code: int) -> None:
    """hypercorn's ``H11Protocol._send_error_response``, with a body."""
    messages = _HEAD_MESSAGES if getattr(self, "stream", None) is None else _BODY_MESSAGES
    template = messages.get(
        status_code, "the request could not be read as HTTP/1.1 (status {status})"
    )
    message = template.format(limit=self.config.h11_max_incomplete_size, status=status_code)
    body = json.dumps({"message": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-amzn-errortype", b"ValidationException"),
        (b"x-amzn-request-id", new_request_id().encode()),
        (b"connection", b"close"),
    ]
    response = h11.Response(
        status_code=status_code, headers=list(chain(headers, self.config.response_headers("h11")))
    )
    await self._send_h11_event(response)
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


def install() -> None:
    """Make hypercorn's HTTP/1.1 refusals carry a body; idempotent."""
    if hasattr(H11Protocol, "_send_error_response"):
        setattr(H11Protocol, "_send_error_response", _send_error_response)  # noqa: B010
