"""Standard Webhooks signatures (``webhook-id``, ``-timestamp``, ``-signature``).

The signature is ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the
secret's bytes (``whsec_`` + base64). The same scheme signs the hub's deliveries and
checks the commands the cloud pushes to the hub.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
# Standard Webhooks: a timestamp further than this from the receiver's clock is refused.
TIMESTAMP_TOLERANCE_S = 5 * 60


class SignatureError(Exception):
    """A delivery's signature headers are missing, stale or do not match."""


def new_secret() -> str:
    """Return a new random secret (32 bytes) in the ``whsec_`` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_bytes(secret: str) -> bytes:
    """Return the key of a ``whsec_...`` secret (or of bare base64)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError("the webhook secret is not base64 after 'whsec_'") from err
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` header value for a body."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secret: str, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Return the three Standard Webhooks headers of a delivery."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify(secret: str, received: dict[str, str], body: bytes, now: float) -> str:
    """Check a delivery's headers; return its ``webhook-id``.

    Raises SignatureError when a header is missing, the timestamp is more than five
    minutes from ``now``, or no ``v1`` signature matches.
    """
    lowered = {key.lower(): value for key, value in received.items()}
    message_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (message_id and timestamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or signature")
    try:
        sent_at = int(timestamp)
    except ValueError as err:
        raise SignatureError("webhook-timestamp is not a number") from err
    if abs(now - sent_at) > TIMESTAMP_TOLERANCE_S:
        raise SignatureError("webhook-timestamp is more than 5 minutes off")
    expected = sign(secret, message_id, sent_at, body).encode()
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(
            candidate.encode(), expected
        ):
            return message_id
    raise SignatureError("no signature matches")
