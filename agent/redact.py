"""Secrets out of every output: logs, the status page, error messages.

The configuration's secrets (SecretStr fields: passwords, API keys, tokens,
signing keys) are registered once loaded; anything floorlink writes for people
passes through `scrub`. Libraries sometimes put a password into an exception's
text (a URL with credentials, an echoed login): this catches those too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_LENGTH = 4  # shorter "secrets" would mask ordinary words and numbers

_secrets: set[str] = set()


def register(values: Any) -> None:
    """Remember every secret in a configuration (or any model, list or dict of them)."""
    for secret in _secret_values(values):
        if len(secret) >= MIN_LENGTH:
            _secrets.add(secret)


def scrub(text: str) -> str:
    if not _secrets or not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: no half masks
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
        user, password = getattr(value, "username", None), getattr(value, "password", None)
        if isinstance(user, str) and isinstance(password, SecretStr):
            # HTTP basic auth puts the pair on the wire in base64: an echo shows it so.
            pair = f"{user}:{password.get_secret_value()}".encode()
            yield base64.b64encode(pair).decode()
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)
