"""Secrets out of every output: logs, the status page, error messages.

A secret is known by where it came from, not where it sits: every value the
loader read from `${env:}`, `${file:}` or `${cred:}` is registered as it is
resolved, wherever in the file the reference stands (a misspelled key, `url:`,
the middle of a URL), and so are the configuration's SecretStr fields.
Anything floorlink writes for people passes through `scrub`. Libraries
sometimes put a password into an exception's text (a URL with credentials, an
echoed login): this catches those too.

Outputs encode text (JSON, HTML, Prometheus, URLs) and an encoded secret no
longer matches the secret, so each secret is registered in its encoded forms
as well; structured outputs are scrubbed before they are encoded all the same.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_LENGTH = 4  # shorter "secrets" would mask ordinary words and numbers

_secrets: set[str] = set()


def register(values: Any) -> None:
    """Remember every secret in a configuration (or any model, list or dict of them)."""
    for secret in _secret_values(values):
        register_value(secret)


def register_value(secret: str) -> None:
    """Remember one secret, as itself and as each output encoding would show it."""
    if len(secret) < MIN_LENGTH:
        return
    _secrets.add(secret)
    for encoded in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                    html.escape(secret), html.escape(secret, quote=False),
                    quote(secret, safe=""), quote(secret),
                    secret.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")):
        if len(encoded) >= MIN_LENGTH:
            _secrets.add(encoded)


def scrub_values(value: Any) -> Any:
    """`scrub` applied to every string inside dicts and lists, keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_values(k): scrub_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_values(item) for item in value]
    return value


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
