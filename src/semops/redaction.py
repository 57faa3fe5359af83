"""One redactor for every message that may quote a secret: API errors echo the key they
rejected, and tracking URIs may carry a user and password."""

from __future__ import annotations

import re

# OpenAI's sk-... and sk-proj-..., Anthropic's sk-ant-...; servers echo a rejected key partly
# masked with asterisks, so those count as key characters too.
KEY_SHAPED = re.compile(r"\bsk-[A-Za-z0-9_*.-]{4,}")
URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s]*@")


def redact(text: str, secret: str | None = None, *, placeholder: str = "[redacted]") -> str:
    """`text` with `secret` replaced by `placeholder`, anything shaped like an API key by
    `sk-[redacted]`, and credentials in URLs (scheme://user:password@host) by `***`."""
    if secret:
        text = text.replace(secret, placeholder)
    text = URL_CREDENTIALS.sub(r"\1***@", text)
    return KEY_SHAPED.sub("sk-[redacted]", text)
