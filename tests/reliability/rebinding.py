"""DNS rebinding for the tests: a host that answers a loopback address the tests treat as public
(allowed by research.web.allow_networks) first, and the internal one to every later lookup."""

from __future__ import annotations

import socket
from typing import Any

import pytest

REBIND_HOST = "rebind.example"
PUBLIC = "127.0.0.2"  # allowed by allow_networks: a public address, for these tests
INTERNAL = "127.0.0.1"


def rebind(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """REBIND_HOST answers PUBLIC to the first lookup and INTERNAL to every later one (an
    override of the system resolver, not of our code); the answers given are listed."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != REBIND_HOST:
            return real(host, port, *args, **kwargs)
        answers.append(PUBLIC if not answers else INTERNAL)
        return real(answers[-1], port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers
