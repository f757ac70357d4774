"""Signed payloads for agency systems: routing's transfers and notify's webhooks.

The Standard Webhooks scheme (HMAC-SHA256 over `id.timestamp.body`, headers `webhook-id`,
`webhook-timestamp`, `webhook-signature`), through its reference library, so an agency can
verify with any Standard Webhooks implementation. The id stays the same across retries of
one message: receivers de-duplicate with it; the timestamp is the attempt's and bounds replay.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core.clock import SYSTEM_CLOCK

SECRET_PREFIX = "whsec_"  # noqa: S105 (the scheme's marker, not a secret)


class SignatureError(ValueError):
    """The payload is unsigned, signed with another secret, altered or too old."""


def new_secret() -> str:
    """A fresh 32-byte signing secret in the Standard Webhooks text form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_headers(
    secret: str, message_id: str, body: bytes, at: datetime | None = None
) -> dict[str, str]:
    at = (at or SYSTEM_CLOCK.now()).astimezone(UTC)
    signature = Webhook(secret).sign(message_id, at, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def verify_signature(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Raises SignatureError unless one of the signatures matches; tolerance is 5 minutes."""
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError as exc:
        raise SignatureError(str(exc)) from None
    except ValueError as exc:  # a malformed signature header (no "," or bad base64)
        raise SignatureError(f"malformed signature: {exc}") from None
