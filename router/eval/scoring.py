"""Scoring closed answers (normalised match, numbers, multiple-choice letters) and rubric verdicts."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from router.eval.dataset import LETTERS, Criterion, Item
from router.eval.results import ResultRecord

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NON_WORD = re.compile(r"[^0-9a-z]+")
# A number as people write it: sign, thousands separators, decimals, a simple fraction.
_NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?![\w])")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ClosedScore:
    correct: bool
    extracted: str | None  # what was read out of the reply (a letter, a number); None when nothing was


def normalise(text: str) -> str:
    """Lower case, accents and punctuation removed, articles dropped, whitespace collapsed.

    Apostrophes vanish rather than split words, so "Sana'a" and "Sanaa" agree."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("'", "").replace("\u2019", "")
    text = _NON_WORD.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def visible(reply: str) -> str:
    """The reply without a reasoning block some models emit before the answer."""
    return _THINK.sub(" ", reply).strip()


def parse_number(text: str) -> Fraction | None:
    text = text.strip().replace("\u2212", "-").replace(",", "").replace(" ", "")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def extract_number(reply: str) -> str | None:
    """The number a reply commits to: the one after "answer is" when present, else the last one."""
    reply = visible(reply)
    markers = list(_ANSWER_IS.finditer(reply))
    if markers:
        found = _NUMBER.search(reply, markers[-1].end())
        if found:
            return found.group(0)
    numbers = _NUMBER.findall(reply)
    return numbers[-1] if numbers else None


def extract_choice(reply: str, choices: list[str]) -> str | None:
    """The option letter a reply picks, or None.

    In order: "answer is (B)", a reply that starts with the letter ("B", "B.", "(B) ..."), a single
    letter standing alone, and finally, for a short reply, the text of exactly one option (small
    models often answer with the option's words instead of its letter). A reply that walks through
    the options ("A. Africa: ...", "B. ...") without committing to one picks nothing."""
    reply = visible(reply)
    letters = LETTERS[: len(choices)] if choices else "ABCD"
    cls = f"[{letters}]"
    reply = reply.replace("*", "")  # markdown bold around the letter
    # "answer is B" / "answer: (b)"; a bare lower-case letter is left alone ("the answer is a bit ...").
    lead = r"(?i:answer\s*(?:is|:)?\s*(?:option\s*)?)"
    found = re.search(rf"{lead}(?:\((?i:({cls}))\)|({cls}))(?!\w)", reply)
    if found:
        return next(g for g in found.groups() if g).upper()
    # A letter counts when punctuation or the line's end marks it as a label, so the article in
    # "A cat is ..." is not read as option A.
    label = rf"(?:^|(?<=[\s\(\[]))\(?({cls})(?:[\)\]\.:,](?!\w)|\s*$)"
    found = re.match(rf"\s*(?:option\s*)?{label}", reply, re.MULTILINE)
    if found:
        return found.group(1)
    picked = set()
    walked = False
    for match in re.finditer(label, reply, re.MULTILINE):
        if _introduces_option(reply, match, choices):
            walked = True  # "A. <option A's text>" inside a reply: going through the list, not answering
        else:
            picked.add(match.group(1))
    if len(picked) == 1:
        return picked.pop()
    if choices and not picked and not walked:
        said = normalise(reply)
        longest = max(len(normalise(text).split()) for text in choices)
        if len(said.split()) <= longest + 8:
            hits = [LETTERS[i] for i, text in enumerate(choices) if normalise(text) and _has_words(said, normalise(text))]
            if len(hits) == 1:
                return hits[0]
    return None


def _introduces_option(reply: str, match: re.Match[str], choices: list[str]) -> bool:
    """Whether the label starts a line and is followed by the start of its own option's text."""
    line_start = reply.rfind("\n", 0, match.start()) + 1
    if reply[line_start : match.start()].strip():
        return False
    index = LETTERS.index(match.group(1))
    if not choices or index >= len(choices):
        return False
    head = " ".join(normalise(choices[index]).split()[:3])
    after = normalise(reply[match.end() : match.end() + 200])
    return bool(head) and (after + " ").startswith(head + " ")


def _has_words(haystack: str, needle: str) -> bool:
    return f" {needle} " in f" {haystack} "


def score_closed(item: Item, reply: str) -> ClosedScore:
    """Correctness of a reply to a closed item (``item.scorer`` is not ``rubric``)."""
    assert item.answer is not None
    golds = [item.answer, *item.aliases]
    if item.scorer == "exact":
        said = normalise(visible(reply))
        return ClosedScore(any(said == normalise(g) for g in golds), said or None)
    if item.scorer == "contains":
        said = normalise(visible(reply))
        return ClosedScore(any(normalise(g) and _has_words(said, normalise(g)) for g in golds), said or None)
    if item.scorer == "number":
        raw = extract_number(reply)
        value = parse_number(raw) if raw is not None else None
        want = [parse_number(g) for g in golds]
        return ClosedScore(value is not None and any(w is not None and value == w for w in want), raw)
    if item.scorer == "choice":
        letter = extract_choice(reply, item.choices)
        return ClosedScore(letter is not None and letter == item.answer.upper(), letter)
    raise ValueError(f"score_closed: item {item.id} uses scorer {item.scorer!r}")


def rubric_score(criteria: list[Criterion], met: Mapping[str, bool]) -> float:
    """(positive weight met - negative weight triggered) / total positive weight, clipped to [0, 1].

    A criterion with a negative weight describes a mistake (a confident wrong claim, an unsafe
    instruction): when it is met, its weight is subtracted."""
    total = sum(c.weight for c in criteria if c.weight > 0)
    gained = sum(c.weight for c in criteria if met.get(c.id))
    return max(0.0, min(1.0, gained / total))


def pattern_verdicts(criteria: list[Criterion], reply: str) -> dict[str, bool] | None:
    """Each criterion's pattern checked against the reply; None when some criterion has no pattern."""
    if any(c.pattern is None for c in criteria):
        return None
    text = visible(reply)
    return {c.id: re.search(c.pattern, text, re.IGNORECASE) is not None for c in criteria if c.pattern is not None}


def rescored(item: Item, record: ResultRecord) -> ResultRecord:
    """A record scored again from its stored answer with today's scorers (no model call).

    Closed items get a new score; open items a new pattern score (and a new score when the patterns
    were the grader). Judge verdicts are kept as they are; failed calls stay failed."""
    if record.status == "error" or record.content is None:
        return record
    if item.scorer != "rubric":
        closed = score_closed(item, record.content)
        return record.model_copy(
            update={"status": "scored", "score": 1.0 if closed.correct else 0.0, "grader": "match", "extracted": closed.extracted}
        )
    verdicts = pattern_verdicts(item.rubric, record.content)
    pattern = rubric_score(item.rubric, verdicts) if verdicts is not None else None
    update: dict[str, object] = {"pattern_score": pattern}
    if record.grader == "pattern" and pattern is not None:
        update.update(status="scored", score=pattern, error=None)
    return record.model_copy(update=update)
