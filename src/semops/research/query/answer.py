"""Answers with numbered citations to retrieved passages: written by Claude through the Anthropic
Messages API when ANTHROPIC_API_KEY is set, otherwise the best passages themselves, cited."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from semops.config.research import AnswerConfig
from semops.errors import SemopsError
from semops.redaction import redact

API_KEY_VARIABLE = "ANTHROPIC_API_KEY"

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages in the user's message. "
    "After each claim, cite the passages that support it by their numbers in square brackets, "
    "such as [1] or [2][3]. Do not add facts that the passages do not state. "
    "If the passages do not contain the answer, say so plainly instead of guessing. "
    "Answer concisely, in the language of the question."
)

NO_KEY_NOTE = (
    f"{API_KEY_VARIABLE} is not set: showing the best-matching passages instead of a written "
    "answer."
)

NO_PASSAGES_TEXT = "No indexed passage matches this question, so there is nothing to answer from."

CUT_MARK = " ..."
# A passage cut shorter than this says too little to be worth its header; it is dropped instead.
# The first passage is always kept, cut if need be, so that something is sent.
MIN_CUT_CHARS = 200
# The API's own error text is shown to the user; an HTML error page from a proxy is cut here.
MAX_API_MESSAGE_CHARS = 300

# `[3]`, `[1, 2]`; not an index such as `items[1]` (a word character right before it).
_CITATION = re.compile(r"(?<!\w)\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk, as the answer cites it. `page` is 1-based where the source has pages;
    `opens_section` is False for a chunk that continues its section (its text starts inside)."""

    source: str
    title_path: tuple[str, ...]
    page: int | None
    text: str
    score: float
    opens_section: bool = True


@dataclass(frozen=True)
class Citation:
    """A passage the answer cites: `number` is the one it has in the answer's text."""

    number: int
    source: str
    title_path: tuple[str, ...]
    page: int | None
    opens_section: bool = True


@dataclass(frozen=True)
class Answer:
    text: str
    # The passages cited in `text`, by ascending number.
    citations: tuple[Citation, ...]
    mode: Literal["claude", "extractive"]
    # The model that wrote the text, as the API names it; None for an extractive answer.
    model: str | None
    # What the reader should know about how the answer was made (sentences), or None.
    note: str | None


@dataclass(frozen=True)
class Context:
    """The passages that fit the context bound, numbered from 1 in this order."""

    passages: tuple[Passage, ...]
    # Says which passage was cut or how many were left out to respect the bound; None if neither.
    note: str | None


def citation_label(
    source: str, title_path: Sequence[str], page: int | None, opens_section: bool = True
) -> str:
    """`source > heading > subheading (p. N)`: how a passage is named in prompts and answers;
    `(continued, p. N)` for a passage that starts inside its section."""
    label = " > ".join([source, *title_path])
    where = [] if opens_section else ["continued"]
    where += [] if page is None else [f"p. {page}"]
    return f"{label} ({', '.join(where)})" if where else label


def cut_at_word(text: str, limit: int) -> str | None:
    """`text` cut at a word boundary and marked with " ...", at most `limit` characters in all;
    None when not even a word fits."""
    room = limit - len(CUT_MARK)
    if room <= 0:
        return None
    # A space right after the last fitting character still counts as a boundary.
    boundary = text.rfind(" ", 0, room + 1)
    head = text[:boundary] if boundary > 0 else text[:room]
    head = head.rstrip()
    return head + CUT_MARK if head else None


def select_context(passages: Sequence[Passage], top_k: int, max_context_chars: int) -> Context:
    """The first `top_k` passages (best first, as retrieved) whose texts fit in
    `max_context_chars` characters together. The first passage that does not fit is cut at a
    word boundary (if the cut keeps at least MIN_CUT_CHARS, or it is the first passage) or
    dropped; those after it are left out, so the ranking is kept."""
    candidates = [p for p in passages if p.text.strip()][:top_k]
    chosen: list[Passage] = []
    used = 0
    note: str | None = None
    for index, passage in enumerate(candidates):
        text = passage.text.strip()
        if used + len(text) <= max_context_chars:
            chosen.append(replace(passage, text=text))
            used += len(text)
            continue
        room = max_context_chars - used
        cut = cut_at_word(text, room) if room >= MIN_CUT_CHARS or not chosen else None
        if cut is not None:
            chosen.append(replace(passage, text=cut))
        left_out = len(candidates) - len(chosen)
        bound = f"research.answer.max_context_chars={max_context_chars}"
        if cut is not None:
            note = f"Passage [{index + 1}] was cut to {len(cut)} of {len(text)} characters"
            note += f" and {left_out} more were left out" if left_out else ""
            note += f" to fit {bound}."
        else:
            note = f"{left_out} of {len(candidates)} passages were left out to fit {bound}."
        break
    return Context(tuple(chosen), note)


def build_user_message(question: str, passages: Sequence[Passage]) -> str:
    """The passages numbered [1]..[n], each under a header naming where it comes from, then the
    question."""
    blocks = [
        f"[{number}] {citation_label(p.source, p.title_path, p.page, p.opens_section)}\n{p.text}"
        for number, p in enumerate(passages, start=1)
    ]
    return "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"


def cited_numbers(text: str) -> list[int]:
    """Every number cited in square brackets in `text`, ascending, once each."""
    numbers = {int(number) for group in _CITATION.findall(text) for number in group.split(",")}
    return sorted(numbers)


def cite(text: str, passages: Sequence[Passage]) -> tuple[tuple[Citation, ...], str | None]:
    """The citations of `text` that refer to one of `passages` (numbered from 1), and a note
    naming the numbers that refer to none."""
    numbers = cited_numbers(text)
    citations = tuple(_citation(n, passages[n - 1]) for n in numbers if 1 <= n <= len(passages))
    unknown = [f"[{n}]" for n in numbers if not 1 <= n <= len(passages)]
    if not unknown:
        return citations, None
    which = "which is not a number" if len(unknown) == 1 else "which are not numbers"
    return citations, (
        f"The answer cites {', '.join(unknown)}, {which} of the {len(passages)} passages sent; "
        "left out of the sources."
    )


def extractive_answer(context: Context, note: str) -> Answer:
    """The passages of `context` themselves, each followed by its citation number."""
    numbered = list(enumerate(context.passages, start=1))
    text = "\n\n".join(f"{p.text} [{n}]" for n, p in numbered)
    return Answer(
        text=text or NO_PASSAGES_TEXT,
        # Every passage shown, not the bracketed numbers of the text: a passage may hold `[1, 2]`.
        citations=tuple(_citation(n, p) for n, p in numbered),
        mode="extractive",
        model=None,
        note=_join_notes(note, context.note),
    )


def answer(question: str, passages: Sequence[Passage], cfg: AnswerConfig) -> Answer:
    """Answer `question` from `passages` (best first): with Claude when ANTHROPIC_API_KEY is set
    in the environment, otherwise extractively. Nothing is sent when there is no passage."""
    if not question.strip():
        raise SemopsError("the question is empty: ask something to answer from the passages")
    context = select_context(passages, cfg.top_k, cfg.max_context_chars)
    api_key = os.environ.get(API_KEY_VARIABLE, "").strip()
    if not api_key:
        return extractive_answer(context, NO_KEY_NOTE)
    if not context.passages:
        return extractive_answer(context, "Nothing was sent to Claude.")
    reply, model, stop_reason = _ask_claude(question, context, cfg, api_key)
    citations, citation_note = cite(reply, context.passages)
    truncated = (
        f"The answer was cut at research.answer.max_tokens={cfg.max_tokens} tokens."
        if stop_reason == "max_tokens"
        else None
    )
    return Answer(
        text=reply,
        citations=citations,
        mode="claude",
        model=model,
        note=_join_notes(context.note, citation_note, truncated),
    )


def format_answer(ans: Answer) -> str:
    """The answer's text, then `Sources:` with one line per cited passage, then its note."""
    parts = [ans.text.rstrip()]
    if ans.citations:
        lines = [
            f"[{c.number}] {citation_label(c.source, c.title_path, c.page, c.opens_section)}"
            for c in ans.citations
        ]
        parts.append("Sources:\n" + "\n".join(lines))
    if ans.note:
        parts.append(f"Note: {ans.note}")
    return "\n\n".join(parts) + "\n"


def _citation(number: int, passage: Passage) -> Citation:
    return Citation(number, passage.source, passage.title_path, passage.page, passage.opens_section)


def _join_notes(*notes: str | None) -> str | None:
    return " ".join(n for n in notes if n) or None


def _ask_claude(
    question: str, context: Context, cfg: AnswerConfig, api_key: str
) -> tuple[str, str, str | None]:
    """Claude's reply text, the model that wrote it and why it stopped. The SDK reads
    ANTHROPIC_BASE_URL and retries 429, 5xx and timeouts itself with backoff."""
    import anthropic

    client = anthropic.Anthropic(api_key=api_key, timeout=cfg.timeout, max_retries=cfg.max_retries)
    try:
        message = client.messages.create(
            model=cfg.model,
            max_tokens=cfg.max_tokens,
            system=SYSTEM_PROMPT,
            messages=[{"role": "user", "content": build_user_message(question, context.passages)}],
        )
    except anthropic.APIStatusError as err:
        detail = _api_text(err.api_message or err.message, api_key)
        retry_after = err.response.headers.get("retry-after")
        raise _status_error(err.status_code, err.type, detail, retry_after, cfg) from None
    except anthropic.APITimeoutError:
        raise SemopsError(
            f"the Anthropic API did not answer within research.answer.timeout={cfg.timeout} s "
            f"(tried {1 + cfg.max_retries} times, research.answer.max_retries={cfg.max_retries})"
        ) from None
    except anthropic.APIConnectionError as err:
        cause = _api_text(str(err.__cause__ or err.message), api_key)
        raise SemopsError(
            f"could not connect to the Anthropic API at {client.base_url} "
            f"(tried {1 + cfg.max_retries} times): {cause}"
        ) from None
    finally:
        client.close()
    text = "".join(b.text for b in message.content if isinstance(b, anthropic.types.TextBlock))
    if not text.strip():
        raise SemopsError(
            f"Claude ({message.model}) returned no text (stop_reason={message.stop_reason!r})"
        )
    return text.strip(), message.model, message.stop_reason


def _status_error(
    status: int, error_type: str | None, detail: str, retry_after: str | None, cfg: AnswerConfig
) -> SemopsError:
    """The user's message for an error status the API answered with (after the SDK's retries)."""
    retries = f"after {cfg.max_retries} retries (research.answer.max_retries)"
    if status == 401:
        return SemopsError(f"Anthropic rejected {API_KEY_VARIABLE} (401): {detail}")
    if status == 404:
        return SemopsError(
            f"the Anthropic API has no model research.answer.model={cfg.model!r} (404): "
            f"{detail}; set it to a current model"
        )
    if status == 429:
        wait = f"; the API asks to wait {_retry_after_text(retry_after)}" if retry_after else ""
        return SemopsError(f"Anthropic rate limit (429) still reached {retries}{wait}: {detail}")
    kind = f" ({error_type})" if error_type else ""
    if status >= 500:
        return SemopsError(f"the Anthropic API failed with {status}{kind} {retries}: {detail}")
    return SemopsError(f"the Anthropic API refused the request with {status}{kind}: {detail}")


def _retry_after_text(retry_after: str) -> str:
    """A Retry-After value in words: it is a number of seconds or an HTTP date."""
    try:
        return f"{float(retry_after):g} s"
    except ValueError:
        return retry_after


def _api_text(text: str, api_key: str) -> str:
    """`text` without the key (a server may echo it back) and cut to a readable length."""
    text = redact(text, api_key, placeholder=f"<{API_KEY_VARIABLE}>")
    if len(text) > MAX_API_MESSAGE_CHARS:
        text = text[:MAX_API_MESSAGE_CHARS] + "..."
    return text
