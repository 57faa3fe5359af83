"""Answers with citations: the anthropic SDK, unmodified, against a local server speaking the
Messages API; the extractive answer without a key; the context bound; every API failure."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from semops.config.research import AnswerConfig
from semops.config.validation import build
from semops.errors import ConfigError, SemopsError
from semops.research.query.answer import (
    NO_KEY_NOTE,
    SYSTEM_PROMPT,
    Answer,
    Citation,
    Passage,
    answer,
    cited_numbers,
    format_answer,
    select_context,
)

API_KEY = "sk-ant-api03-TEST-Zq8vV1xL0fY3kP9sR2mN-secret"
MODEL = "claude-sonnet-5-5"

PASSAGES = [
    Passage(
        source="samples/research/docs/faq.pdf",
        title_path=("Python FAQ", "How do I copy an object?"),
        page=3,
        text="Try copy.copy() for general cases and copy.deepcopy() for nested objects.",
        score=0.91,
    ),
    Passage(
        source="https://docs.python.org/3/library/copy.html",
        title_path=("copy - Shallow and deep copy operations",),
        page=None,
        text="A shallow copy constructs a new compound object and inserts references into it.",
        score=0.84,
    ),
    Passage(
        source="samples/research/notes.md",
        title_path=(),
        page=None,
        text="Some objects can be copied more easily: dicts have a copy() method.",
        score=0.52,
    ),
]

Reply = tuple[int, dict[str, str], dict[str, Any]]


def message_reply(text: str, stop_reason: str = "end_turn") -> Reply:
    """A Messages API reply, as documented."""
    return (
        200,
        {},
        {
            "id": "msg_01TestAnswer",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 412, "output_tokens": 37},
        },
    )


def error_reply(status: int, error_type: str, message: str, **headers: str) -> Reply:
    """An error, in the API's documented error shape."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return status, headers, body


@dataclass
class MessagesServer:
    """What the local Messages API received, and how it answers (set by each test)."""

    url: str
    respond: Callable[[dict[str, Any]], Reply] = lambda _: message_reply("unset [1]")
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    # Set at teardown: a handler told to stall waits on it, not on a fixed sleep.
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.requests]


def start_server(state_holder: list[MessagesServer]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state = state_holder[0]
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append((headers, body))
            if self.path != "/v1/messages":
                status, extra, reply = error_reply(404, "not_found_error", f"no {self.path}")
            else:
                status, extra, reply = state.respond(body)
            payload = json.dumps(reply).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("request-id", f"req_{len(state.requests)}")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and went away

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesServer]:
    """A Messages API on 127.0.0.1, with ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY pointing at it."""
    holder: list[MessagesServer] = []
    server = start_server(holder)
    state = MessagesServer(url=f"http://127.0.0.1:{server.server_address[1]}")
    holder.append(state)
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", state.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def cfg(**overrides: Any) -> AnswerConfig:
    return AnswerConfig(**{"model": MODEL, "max_retries": 0, **overrides})


def sent_passages(body: dict[str, Any]) -> dict[int, str]:
    """The passage texts of a request's user message, by number."""
    content = body["messages"][0]["content"]
    listing = content.split("Passages:\n\n", 1)[1].rsplit("\n\nQuestion: ", 1)[0]
    blocks = re.split(r"(?:^|\n\n)\[(\d+)\] [^\n]*\n", listing)[1:]
    return {int(number): text for number, text in zip(blocks[::2], blocks[1::2], strict=True)}


def ask_expecting_error(api: MessagesServer, config: AnswerConfig) -> str:
    with pytest.raises(SemopsError) as caught:
        answer("How do I copy an object in Python?", PASSAGES, config)
    message = str(caught.value)
    assert API_KEY not in message
    assert caught.value.__cause__ is None  # the SDK's exception, with its request, is not kept
    return message


def test_claude_answer_is_cited_and_unknown_numbers_are_dropped(api: MessagesServer) -> None:
    api.respond = lambda _: message_reply(
        "Use copy.copy() for a shallow copy [1][2] and copy.deepcopy() for nested objects "
        "[1, 3]. Lists can also be sliced [9]."
    )
    question = "How do I copy an object in Python?"

    result = answer(question, PASSAGES, cfg(max_tokens=333))

    assert result.mode == "claude"
    assert result.model == MODEL
    assert result.citations == (
        Citation(1, PASSAGES[0].source, PASSAGES[0].title_path, 3),
        Citation(2, PASSAGES[1].source, PASSAGES[1].title_path, None),
        Citation(3, PASSAGES[2].source, (), None),
    )
    assert result.note == (
        "The answer cites [9], which is not a number of the 3 passages sent; left out of the "
        "sources."
    )
    assert "\n[9]" not in format_answer(result)

    [(headers, body)] = api.requests
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["anthropic-version"]
    assert body["model"] == MODEL
    assert body["max_tokens"] == 333
    assert body["system"] == SYSTEM_PROMPT
    assert "only" in SYSTEM_PROMPT and "[1]" in SYSTEM_PROMPT and "do not contain" in SYSTEM_PROMPT
    [user] = body["messages"]
    assert user["role"] == "user"
    assert (
        "[1] samples/research/docs/faq.pdf > Python FAQ > How do I copy an object? (p. 3)\n"
        in (user["content"])
    )
    assert "[3] samples/research/notes.md\n" in user["content"]
    assert user["content"].endswith(f"Question: {question}")
    assert sent_passages(body) == {n: p.text for n, p in enumerate(PASSAGES, start=1)}


def test_request_respects_top_k_and_context_bound(api: MessagesServer) -> None:
    api.respond = lambda _: message_reply("See [1] and [2].")
    words = " ".join(f"word{i}" for i in range(600))
    assert 4000 < len(words) < 8000 - 200  # one fits whole, the next is cut, not dropped
    long_passages = [
        Passage(f"doc{i}.md", ("Doc", f"Part {i}"), None, words, 1 / (i + 1)) for i in range(10)
    ]
    config = cfg(max_context_chars=8000, top_k=4)

    result = answer("What is word42?", long_passages, config)

    sent = sent_passages(api.bodies[0])
    assert list(sent) == [1, 2]
    assert sum(len(text) for text in sent.values()) <= 8000
    assert sent[1] == words
    kept = sent[2].removesuffix(" ...")
    assert sent[2].endswith(" ...") and words.startswith(kept) and words[len(kept)] == " "
    assert result.note == (
        f"Passage [2] was cut to {len(sent[2])} of {len(words)} characters and 2 more were left "
        "out to fit research.answer.max_context_chars=8000."
    )


def test_context_drops_a_passage_that_would_be_cut_too_short() -> None:
    first = Passage("a.md", (), None, "x" * 900, 1.0)
    second = Passage("b.md", (), None, "y " * 400, 0.5)
    empty = Passage("c.md", (), None, "  \n", 0.4)

    context = select_context([first, empty, second], top_k=2, max_context_chars=1000)

    assert [p.source for p in context.passages] == ["a.md"]
    assert context.note == (
        "1 of 2 passages were left out to fit research.answer.max_context_chars=1000."
    )
    # The first passage is always sent, cut to the bound if need be.
    [only] = select_context([second], top_k=2, max_context_chars=50).passages
    assert only.text == "y " * 22 + "y ..." and len(only.text) == 49


def test_rejected_key_names_the_variable_and_never_shows_the_key(api: MessagesServer) -> None:
    api.respond = lambda _: error_reply(
        401, "authentication_error", f"invalid x-api-key: {API_KEY}"
    )

    message = ask_expecting_error(api, cfg(max_retries=2))

    assert message.startswith("Anthropic rejected ANTHROPIC_API_KEY (401): invalid x-api-key")
    assert len(api.requests) == 1  # an authentication error is not retried


def test_unknown_model_names_the_config_key(api: MessagesServer) -> None:
    api.respond = lambda body: error_reply(404, "not_found_error", f"model: {body['model']}")

    message = ask_expecting_error(api, cfg(model="claude-nonexistent-1"))

    assert "research.answer.model='claude-nonexistent-1'" in message
    assert "404" in message and "model: claude-nonexistent-1" in message


def test_rate_limit_is_retried_then_reported_with_retry_after(api: MessagesServer) -> None:
    api.respond = lambda _: error_reply(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your rate limit.",
        **{"retry-after": "1"},
    )
    started = time.monotonic()

    message = ask_expecting_error(api, cfg(max_retries=2))

    assert len(api.requests) == 3
    assert time.monotonic() - started >= 2  # the SDK waited as told before each retry
    assert message.startswith("Anthropic rate limit (429) still reached after 2 retries")
    assert "wait 1 s" in message and "exceeded your rate limit" in message


@pytest.mark.parametrize(("status", "error_type"), [(529, "overloaded_error"), (500, "api_error")])
def test_server_errors_are_retried_then_reported(
    api: MessagesServer, status: int, error_type: str
) -> None:
    api.respond = lambda _: error_reply(status, error_type, "Overloaded" if status == 529 else "x")

    message = ask_expecting_error(api, cfg(max_retries=1))

    assert len(api.requests) == 2
    assert f"failed with {status} ({error_type}) after 1 retries" in message


def test_timeout_names_the_config_key(api: MessagesServer) -> None:
    def stall(_: dict[str, Any]) -> Reply:
        api.release.wait(10)
        return message_reply("too late [1]")

    api.respond = stall
    started = time.monotonic()

    message = ask_expecting_error(api, cfg(timeout=0.5, max_retries=1))

    assert time.monotonic() - started < 5
    assert len(api.requests) == 2
    assert "did not answer within research.answer.timeout=0.5 s (tried 2 times" in message


def test_unreachable_api_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)

    with pytest.raises(SemopsError, match=rf"could not connect .* at http://127\.0\.0\.1:{port}"):
        answer("How?", PASSAGES, cfg())


def test_answer_cut_at_max_tokens_says_so(api: MessagesServer) -> None:
    api.respond = lambda _: message_reply("Use copy.copy() [1] and", stop_reason="max_tokens")

    result = answer("How do I copy?", PASSAGES, cfg(max_tokens=8))

    assert result.note == "The answer was cut at research.answer.max_tokens=8 tokens."
    assert [c.number for c in result.citations] == [1]


def test_without_key_the_best_passages_are_cited_and_nothing_is_sent(
    api: MessagesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    result = answer("How do I copy an object?", PASSAGES, cfg(top_k=2))

    assert api.requests == []
    assert result.mode == "extractive" and result.model is None
    assert result.note == NO_KEY_NOTE
    assert "ANTHROPIC_API_KEY is not set" in result.note
    assert result.text == f"{PASSAGES[0].text} [1]\n\n{PASSAGES[1].text} [2]"
    assert [(c.number, c.source, c.page) for c in result.citations] == [
        (1, PASSAGES[0].source, 3),
        (2, PASSAGES[1].source, None),
    ]
    assert result == answer("How do I copy an object?", PASSAGES, cfg(top_k=2))
    # Brackets inside a passage are its text, not citations.
    code = Passage("faq.rst", ("FAQ",), None, "x = [1, 2, 7]", 0.3)
    assert [c.number for c in answer("Lists?", [code], cfg()).citations] == [1]


def test_no_key_means_no_anthropic_import() -> None:
    code = (
        "import sys\n"
        "from semops.research.query.answer import Passage, answer\n"
        "from semops.config.research import AnswerConfig\n"
        "a = answer('q?', [Passage('s', (), None, 'text', 1.0)], AnswerConfig())\n"
        "print(a.mode, 'anthropic' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "extractive False"


def test_nothing_is_sent_without_passages(api: MessagesServer) -> None:
    result = answer("How do I copy?", [Passage("a.md", (), None, " ", 0.1)], cfg())

    assert api.requests == []
    assert (result.mode, result.citations, result.note) == (
        "extractive",
        (),
        "Nothing was sent to Claude.",
    )
    assert result.text.startswith("No indexed passage matches")


def test_empty_question_is_refused(api: MessagesServer) -> None:
    with pytest.raises(SemopsError, match="question is empty"):
        answer("  ", PASSAGES, cfg())
    assert api.requests == []


def test_format_answer_lists_sources_and_note() -> None:
    result = Answer(
        text="Use copy.deepcopy() [2] or copy.copy() [1].",
        citations=(
            Citation(1, "samples/research/docs/faq.pdf", ("Python FAQ", "Copying"), 3),
            Citation(2, "https://example.org/copy", (), None),
            Citation(3, "rdocs:R-data.pdf", ("R Data Import/Export", "Encodings"), 8, False),
            Citation(4, "notes.md", ("Notes", "Setup"), None, False),
        ),
        mode="claude",
        model=MODEL,
        note="The answer cites [9], which is not among the 3 passages sent.",
    )

    assert format_answer(result) == (
        "Use copy.deepcopy() [2] or copy.copy() [1].\n\n"
        "Sources:\n"
        "[1] samples/research/docs/faq.pdf > Python FAQ > Copying (p. 3)\n"
        "[2] https://example.org/copy\n"
        "[3] rdocs:R-data.pdf > R Data Import/Export > Encodings (continued, p. 8)\n"
        "[4] notes.md > Notes > Setup (continued)\n\n"
        "Note: The answer cites [9], which is not among the 3 passages sent.\n"
    )
    bare = Answer("The passages do not say.", (), "claude", MODEL, None)
    assert format_answer(bare) == "The passages do not say.\n"


def test_citation_numbers_are_read_from_brackets_only() -> None:
    text = "First [2]. Both [1, 3][2]. Not items[4] nor [x] nor (5)."
    assert cited_numbers(text) == [1, 2, 3]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"max_retries": -1}, "research.answer.max_retries"),
        ({"model": " "}, "research.answer.model"),
        ({"max_context_chars": 0}, "research.answer.max_context_chars"),
    ],
)
def test_bad_answer_config_names_the_key(override: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        build(AnswerConfig, override, "research.answer")
