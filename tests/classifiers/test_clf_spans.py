"""BIO → span decoding (pure, no model needed)."""

from __future__ import annotations

from classifiers.token import Span, _split_tag, _Word, decode_spans


def words(text: str, tags: list[str]) -> list[_Word]:
    out, pos = [], 0
    for tok, tag in zip(text.split(" "), tags):
        out.append(_Word(pos, pos + len(tok), tag, 0.9))
        pos += len(tok) + 1
    return out


def test_split_tag() -> None:
    assert _split_tag("B-EMAIL") == ("B", "EMAIL")
    assert _split_tag("I-GIVEN_NAME") == ("I", "GIVEN_NAME")
    assert _split_tag("O") == ("O", "")
    assert _split_tag("S-CITY") == ("B", "CITY")
    assert _split_tag("E-CITY") == ("I", "CITY")
    assert _split_tag("PERSON") == ("I", "PERSON")


def test_b_i_merge_and_breaks() -> None:
    text = "call John Smith Jones now in New York"
    sp = decode_spans(text, words(text, ["O", "B-NAME", "I-NAME", "B-NAME", "O", "O", "B-CITY", "I-CITY"]))
    assert [(s.label, s.text) for s in sp] == [("NAME", "John Smith"), ("NAME", "Jones"), ("CITY", "New York")]
    assert all(text[s.start : s.end] == s.text for s in sp)


def test_touching_pieces_merge_even_with_b_tags() -> None:
    text = "a@b.com"
    ws = [_Word(0, 2, "B-EMAIL", 1.0), _Word(2, 3, "B-EMAIL", 0.5), _Word(3, 4, "B-EMAIL", 0.5), _Word(4, 7, "B-EMAIL", 1.0)]
    assert decode_spans(text, ws) == [Span("EMAIL", 0, 7, "a@b.com", 0.75)]


def test_i_without_b_starts_a_span_and_type_change_splits() -> None:
    text = "Ann Lee"
    sp = decode_spans(text, words(text, ["I-GIVEN", "I-SURNAME"]))
    assert [(s.label, s.text) for s in sp] == [("GIVEN", "Ann"), ("SURNAME", "Lee")]
