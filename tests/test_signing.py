"""Standard Webhooks signatures: the specification's published vector, and the independent
`standardwebhooks` package verifying what we sign (and we verifying what it signs)."""

from __future__ import annotations

from datetime import UTC, datetime
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from custom_components.gemma_edge.sync.signing import SignatureError, headers, new_secret, secret_bytes, sign, verify

# From the Standard Webhooks specification's test vectors.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specification_s_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert verify(SPEC_SECRET, {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP),
                                "webhook-signature": f"v1,bm90IGl0 {SPEC_SIGNATURE}"}, SPEC_BODY, SPEC_TIMESTAMP) == SPEC_ID  # fmt: skip


def test_the_independent_implementation_agrees_both_ways() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret_bytes(secret)) == 32
    body = b'[{"specversion":"1.0","id":"01J","type":"gemma_edge.action.performed"}]'
    now = int(time.time())
    ours = headers(secret, "msg_1", now, body)
    assert Webhook(secret).verify(body, ours) == [{"specversion": "1.0", "id": "01J", "type": "gemma_edge.action.performed"}]
    theirs = Webhook(secret).sign("msg_2", datetime.fromtimestamp(now, tz=UTC), body.decode())
    assert verify(secret, {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": theirs}, body, now) == "msg_2"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, ours)  # another secret


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-signature": "v1,AAAA"}, "no signature matches"),
        ({"webhook-timestamp": str(SPEC_TIMESTAMP - 301)}, "5 minutes"),
        ({"webhook-timestamp": "soon"}, "not a number"),
        ({"webhook-id": ""}, "missing"),
        ({"webhook-id": "msg_other"}, "no signature matches"),
    ],
)
def test_a_bad_delivery_is_refused_with_a_reason(change: dict[str, str], message: str) -> None:
    received = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE, **change}
    with pytest.raises(SignatureError, match=message):
        verify(SPEC_SECRET, received, SPEC_BODY, SPEC_TIMESTAMP)


def test_a_tampered_body_is_refused() -> None:
    received = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE}
    with pytest.raises(SignatureError):
        verify(SPEC_SECRET, received, b'{"test": 2432232315}', SPEC_TIMESTAMP)


def test_a_secret_that_is_not_base64_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="base64"):
        secret_bytes("whsec_not base64!")
    with pytest.raises(ValueError, match="empty"):
        secret_bytes("whsec_")
