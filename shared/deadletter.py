"""Dead letters: what a service could not publish or apply, parked with its reason.

A message that cannot be published or applied for a reason of its own (too large, refused by
JetStream, a value the store cannot hold) fails the same way on every retry: retried, it would
block everything behind it. It is parked on `llmbus.deadletter.<service>` instead, with headers
that say why, and the service goes on. Failures of the infrastructure (no connection, timeouts,
a stream or database that is down) are retried, never parked.
"""

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import DataError
from eventsourcing.utils import TopicError
from nats.aio.client import Client as NatsClient
from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from llmbus.shared import subjects

log = logging.getLogger("llmbus.deadletter")

TOO_LARGE = "too_large"  # over the server's max_payload, headers included
UNPUBLISHABLE = "unpublishable"  # JetStream or the client refused the message itself
UNROUTABLE = "unroutable"  # the stored event could not be made into a message
INVALID_EVENT = "invalid_event"  # a consumed event that fails its contract
UNRECORDABLE = "unrecordable"  # a valid event the consumer cannot store or apply

# JetStream's error code for a message over the stream's max_msg_size
MESSAGE_TOO_LARGE_CODE = 10054
REASON_CHARS = 300
HEADER_CHARS = 256  # a subject or message id longer than this is shortened in the headers

# Errors a message causes by its content: retrying it fails the same way. Anything else is
# taken to be the infrastructure's and retried, so an outage never parks healthy messages.
# JetStream answers 400 only about the message it was sent (too large, a bad header); its
# answers about itself (stream or cluster unavailable, storage failed) are 5xx.
# Parking goes by what failed, never by how often: an outage fails every entry as often as the
# poison one (so "N failures in a row" would park healthy messages), and an error of a kind not
# listed here is a bug to see in the log, not a message to put away.
ENTRY_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # also pydantic's ValidationError, UnicodeError, JSONDecodeError
    TypeError,
    LookupError,
    ArithmeticError,  # also OverflowError and decimal.InvalidOperation
    DataError,  # the database refused a value (a PostgreSQL NUL character, an out-of-range int)
    AggregateNotFoundError,
    TopicError,  # a stored event of a type this version does not know
    MaxPayloadError,
    BadSubjectError,
    BadHeaderError,
    BadRequestError,
)


def caused_by_entry(exc: BaseException, *also: type[BaseException]) -> bool:
    """Whether `exc` is the message's own fault (park it) rather than the infrastructure's
    (retry it). `also`: a caller's domain errors that an event can cause."""
    return isinstance(exc, ENTRY_ERRORS + also)


def error_type(exc: BaseException) -> str:
    if isinstance(exc, MaxPayloadError) or (
        isinstance(exc, BadRequestError) and exc.err_code == MESSAGE_TOO_LARGE_CODE
    ):
        return TOO_LARGE
    return UNPUBLISHABLE


def describe(exc: BaseException) -> str:
    """An error in one short line. pydantic errors are told by count, since their text can
    quote the input."""
    error_count = getattr(exc, "error_count", None)
    if callable(error_count):
        return f"{error_count()} schema errors"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def connection(js: JetStreamContext) -> NatsClient:
    # nats-py keeps the client on the context and offers no public way to it
    client: NatsClient = js._nc
    return client


def message_size(payload: bytes, headers: Mapping[str, str]) -> int:
    """The bytes the server counts against max_payload: the headers block, as nats-py writes
    it, and the payload. A message over it closes the publisher's connection."""
    block = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(b"NATS/1.0\r\n") + block + 2 + len(payload)


def fits(js: JetStreamContext, payload: bytes, headers: Mapping[str, str]) -> bool:
    return message_size(payload, headers) <= connection(js).max_payload


async def park(
    js: JetStreamContext,
    service: str,
    payload: bytes,
    reason: str,
    error_type: str,
    original_subject: str | None,
    msg_id: str,
    about: Mapping[str, Any] | None = None,
) -> None:
    """Publish a dead letter on llmbus.deadletter.<service> and log it once, without content.
    `msg_id` is stable for the message, so parking it again after a crash is dropped by
    JetStream. A payload that would not fit max_payload is replaced by a stub saying what it
    was: its subject, size and reason, and `about`, the ids that identify it (never contents:
    e.g. its own Nats-Msg-Id, a request id)."""
    # one line of ASCII: NATS headers are text lines, and parsers differ on other bytes
    reason = " ".join(reason.split())[:REASON_CHARS].encode("ascii", "backslashreplace").decode()
    headers = {
        subjects.ERROR_TYPE_HEADER: error_type,
        subjects.ERROR_HEADER: reason,
        subjects.MSG_ID_HEADER: short(msg_id),
    }
    if original_subject is not None:
        headers[subjects.ORIGINAL_SUBJECT_HEADER] = short(original_subject)
    if not fits(js, payload, headers):
        stub = {"subject": original_subject, "bytes": len(payload), **(about or {})}
        payload = stub_payload(stub, reason)
        if not fits(js, payload, headers):
            payload = b""  # the headers still say what and why
    subject = subjects.DEAD_LETTER.format(service=service)
    await js.publish(subject, payload, headers=headers)
    log.warning("parked %s on %s: %s (%s)", short(msg_id), subject, error_type, reason)


def stub_payload(stub: Mapping[str, Any], reason: str) -> bytes:
    shown = {k: short(v) if isinstance(v, str) else v for k, v in stub.items()}
    return json.dumps(shown | {"reason": reason}, separators=(",", ":")).encode()


def short(value: str) -> str:
    """`value`, or if it is too long for a header, a stable digest of it (still unique)."""
    if len(value) <= HEADER_CHARS:
        return value
    return f"{value[:64]}...sha256:{hashlib.sha256(value.encode()).hexdigest()}"
