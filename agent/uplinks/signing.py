"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

    webhook-id:        a unique message id (here: the event id, or the batch's key)
    webhook-timestamp: Unix seconds when sent
    webhook-signature: "v1," + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))

A secret written as "whsec_<base64>" is decoded to its key bytes, as the
reference libraries do; any other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    if secret.startswith(PREFIX):
        return base64.b64decode(secret[len(PREFIX):])
    return secret.encode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def batch_key(event_ids: list[str]) -> str:
    """A stable idempotency key for a batch: the same events give the same key."""
    return hashlib.sha256("\n".join(event_ids).encode()).hexdigest()
