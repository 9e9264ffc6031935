"""Scoring of closed answers, rubric arithmetic, judge verdict parsing and trace costing."""

from __future__ import annotations

import pytest

from router.eval.cost import cost_of
from router.eval.dataset import Criterion, Item
from router.eval.judge import parse_verdict, verdict_schema
from router.eval.scoring import extract_choice, extract_number, normalise, pattern_verdicts, rubric_score, score_closed

CHOICES = ["Paris", "Rome", "Berlin", "Madrid"]


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(C) Berlin", "C"),
        ("The answer is D", "D"),
        ("Answer: C", "C"),
        ("I think the answer is (b)", "B"),
        ("**B**", "B"),
        ("Rome", "B"),
        ("The city is Madrid.", "D"),
        ("A cat sat on the mat, so B.", "B"),  # the article "A" is not option A
        ("The answer is a bit unclear, maybe C.", "C"),
        ("Paris or Rome, hard to say", None),
        ("I have no idea", None),
        ("Either (A) or (B)", None),
        ("B. Rome, not A.", "B"),
        ("<think>maybe A</think>\nC", "C"),
        # walking through the options (cut off by max_tokens) is not an answer
        ("Let's analyze each option:\n\nA. Paris: the capital of France\nB. Rome is", None),
        ("Let's analyze each option:\n\nA. Paris is in France.", None),
        ("I think B. Rome", "B"),
        # the option-text fallback is for short replies, not essays that mention an option
        ("Madrid is lovely in spring and has many museums, parks and restaurants worth a visit", None),
    ],
)
def test_choice_letter_extraction(reply: str, letter: str | None) -> None:
    assert extract_choice(reply, CHOICES) == letter


@pytest.mark.parametrize(
    ("reply", "number"),
    [
        ("4", "4"),
        ("The answer is -3.", "-3"),
        ("2 - -2 = 4", "4"),
        ("1,234 apples", "1,234"),
        ("The answer is 7, not 9", "7"),
        ("\u22125", "\u22125"),
        ("no digits here", None),
    ],
)
def test_number_extraction(reply: str, number: str | None) -> None:
    assert extract_number(reply) == number


def test_normalise_drops_case_accents_punctuation_articles() -> None:
    assert normalise("  The Brasília! ") == "brasilia"
    assert normalise("Sana'a") == normalise("Sanaa") == "sanaa"
    assert normalise("Washington, D.C.") == "washington d c"


def _item(scorer: str, answer: str, **kw: object) -> Item:
    return Item(id="x", prompt="q", scorer=scorer, answer=answer, **kw)  # type: ignore[arg-type]


def test_closed_scorers() -> None:
    assert score_closed(_item("number", "-4"), "It is -4.0").correct
    assert not score_closed(_item("number", "-4"), "It is 4").correct
    assert score_closed(_item("number", "0.5"), "1/2").correct
    assert score_closed(_item("contains", "Brasília"), "The capital is Brasilia.").correct
    assert score_closed(_item("contains", "Washington D.C.", aliases=["Washington"]), "Washington").correct
    # whole words only: "Rome" is not found inside "Romeo"
    assert not score_closed(_item("contains", "Rome"), "Romeo").correct
    assert score_closed(_item("exact", "Paris"), "paris.").correct
    assert not score_closed(_item("exact", "Paris"), "It is Paris").correct
    closed = score_closed(_item("choice", "B", choices=CHOICES), "B) Rome")
    assert closed.correct and closed.extracted == "B"


RUBRIC = [
    Criterion(id="p1", text="a", weight=2),
    Criterion(id="p2", text="b", weight=1),
    Criterion(id="n1", text="wrong claim", weight=-2),
]


def test_rubric_positive_adds_negative_subtracts_and_clips() -> None:
    assert rubric_score(RUBRIC, {"p1": True, "p2": True, "n1": False}) == 1.0
    assert rubric_score(RUBRIC, {"p1": True, "p2": False, "n1": False}) == pytest.approx(2 / 3)
    assert rubric_score(RUBRIC, {"p1": True, "p2": True, "n1": True}) == pytest.approx(1 / 3)
    # a confident wrong answer with nothing right is clipped at 0, not negative
    assert rubric_score(RUBRIC, {"p1": False, "p2": False, "n1": True}) == 0.0


def test_pattern_verdicts_need_every_pattern() -> None:
    crits = [
        Criterion(id="p1", text="says no", weight=1, pattern=r"\bno\b"),
        Criterion(id="n1", text="says yes", weight=-1, pattern=r"^\s*yes"),
    ]
    assert pattern_verdicts(crits, "No, never.") == {"p1": True, "n1": False}
    assert pattern_verdicts([*crits, Criterion(id="p2", text="x", weight=1)], "No") is None


@pytest.mark.parametrize(
    "reply",
    [
        '{"p1": true, "p2": false, "n1": false}',
        'Sure:\n```json\n{"p1": true, "p2": false, "n1": false}\n```',
        '{"criteria": {"p1": "yes", "p2": "no", "n1": 0}}',
        '{"p1": {"met": true, "reason": "ok"}, "p2": false, "n1": false}',
    ],
)
def test_judge_verdict_parsing_accepts_reasonable_json(reply: str) -> None:
    met, error = parse_verdict(reply, RUBRIC)
    assert error is None and met == {"p1": True, "p2": False, "n1": False}


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("Looks good to me!", "no JSON object"),
        ('{"p1": true}', "lacks a true/false for p2, n1"),
        ('{"p1": "maybe", "p2": true, "n1": false}', "lacks a true/false for p1"),
        ("[true, false]", "no JSON object"),
    ],
)
def test_garbage_judge_reply_is_unusable_not_zero(reply: str, why: str) -> None:
    met, error = parse_verdict(reply, RUBRIC)
    assert met is None and error is not None and why in error


def test_verdict_schema_requires_every_criterion() -> None:
    schema = verdict_schema(RUBRIC)["json_schema"]["schema"]
    assert schema["required"] == ["p1", "p2", "n1"]
    assert schema["properties"]["n1"] == {"type": "boolean"}


def test_cost_reads_fusion_trace_other_loopers_and_plain_answers() -> None:
    plain = cost_of({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    assert (plain.calls, plain.prompt_tokens, plain.completion_tokens, plain.trace_key) == (1, 7, 3, None)
    fusion = cost_of(
        {
            "usage": {"prompt_tokens": 90, "completion_tokens": 30},
            "fusion": {"iterations": 4, "usage": {"panel": {"prompt_tokens": 40, "completion_tokens": 20}}},
        }
    )
    assert (fusion.calls, fusion.prompt_tokens, fusion.trace_key) == (4, 90, "fusion")
    assert fusion.stage_usage == {"panel": {"prompt_tokens": 40, "completion_tokens": 20}}
    # a looper that lands later, under its own key, with usage only per stage
    remom = cost_of(
        {
            "remom": {
                "iterations": 6,
                "usage": {
                    "round_1": {"prompt_tokens": 10, "completion_tokens": 5},
                    "final": {"prompt_tokens": 20, "completion_tokens": 8},
                },
            }
        }
    )
    assert (remom.calls, remom.prompt_tokens, remom.completion_tokens, remom.trace_key) == (6, 30, 13, "remom")
    # booleans and negative numbers are not counts
    odd = cost_of({"usage": {"prompt_tokens": -1, "completion_tokens": True}, "meta": {"iterations": True}})
    assert (odd.calls, odd.prompt_tokens, odd.completion_tokens) == (1, 0, 0)
