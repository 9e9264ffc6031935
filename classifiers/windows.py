"""Cut texts into model-sized windows without ever tokenizing more than a budget.

A Hugging Face tokenizer with truncation still tokenizes the whole input (and keeps every overflow
window), so a 1 MB prompt costs gigabytes before the model runs. Here a text is tokenized in bounded
character chunks, only until the token budget is reached; the windows are slices of the original text
(by token offsets), each at most ``window_tokens`` tokens, overlapping by ``overlap`` tokens so an
entity on a boundary is seen whole in one of them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

# Characters tokenized per step: small enough to bound memory, large enough to amortise the call.
CHUNK_CHARS = 8192
# A chunk boundary moves back to whitespace (within this many characters) so no word is split.
_ALIGN_CHARS = 64
# Below this many characters a text is tokenized in one go (the common case: short prompts).
_SMALL_TEXT = 2 * CHUNK_CHARS


@dataclass(frozen=True, slots=True)
class Window:
    text: str  # a slice of the source text, at most ``window_tokens`` tokens long
    source: int  # index of the text it came from
    start: int  # character offset of the slice in that text
    tokens: int = 0  # how many tokens the slice holds (0: not counted)


@dataclass(frozen=True, slots=True)
class WindowPlan:
    windows: list[Window]
    tokens: int  # tokens the windows cover (each counted once)
    complete: bool  # every token of every text is covered
    approx_total_tokens: int  # exact when complete; an estimate otherwise


def plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A copy without truncation or padding: windows need every token's offsets."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


def _align_back(text: str, pos: int, floor: int) -> int:
    """Move ``pos`` back to just after whitespace, unless that would go below ``floor``."""
    if pos >= len(text):
        return len(text)
    for i in range(pos, max(floor, pos - _ALIGN_CHARS), -1):
        if text[i - 1].isspace():
            return i
    return pos


# A token never stands for more characters than this: a wordpiece vocabulary turns a whitespace-free
# megabyte (base64, a pasted blob, a hostile "word") into one [UNK] per chunk, which would let it slip
# past the token budget and make windows of megabytes. Counted in slices of this size, it cannot.
MAX_TOKEN_CHARS = 32


def _offsets(tokenizer: Tokenizer, text: str, base: int) -> list[tuple[int, int]]:
    enc = tokenizer.encode(text, add_special_tokens=False)
    out: list[tuple[int, int]] = []
    for s, e in enc.offsets:
        if e - s > MAX_TOKEN_CHARS:
            out += [(base + k, base + min(k + MAX_TOKEN_CHARS, e)) for k in range(s, e, MAX_TOKEN_CHARS)]
        elif e > s:
            out.append((base + s, base + e))
    return out


def _head_offsets(tokenizer: Tokenizer, text: str, limit: int) -> tuple[list[tuple[int, int]], bool]:
    """Token offsets from the start of ``text``, at most ``limit``; and whether the text ended."""
    if len(text) <= _SMALL_TEXT:
        offs = _offsets(tokenizer, text, 0)
        return offs[:limit], len(offs) <= limit
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(text) and len(out) <= limit:
        end = _align_back(text, pos + CHUNK_CHARS, pos + 1)
        out += _offsets(tokenizer, text[pos:end], pos)
        pos = end
    return out[:limit], pos >= len(text) and len(out) <= limit


def _tail_offsets(tokenizer: Tokenizer, text: str, limit: int) -> list[tuple[int, int]]:
    """The last ``limit`` token offsets of ``text``, tokenizing backwards in chunks."""
    out: list[tuple[int, int]] = []
    end = len(text)
    while end > 0 and len(out) < limit:
        start = max(0, end - CHUNK_CHARS)
        if start > 0:
            # Start the chunk just after whitespace so its first word is whole.
            ahead = text.find(" ", start, min(end, start + _ALIGN_CHARS))
            start = ahead + 1 if ahead != -1 else start
        out = _offsets(tokenizer, text[start:end], start) + out
        end = start
    return out[-limit:] if limit else []


def _cut(text: str, source: int, offs: list[tuple[int, int]], window_tokens: int, overlap: int) -> Iterator[Window]:
    if not offs:
        return
    step = max(1, window_tokens - overlap)
    i = 0
    while True:
        piece = offs[i : i + window_tokens]
        s, e = piece[0][0], piece[-1][1]
        yield Window(text[s:e], source, s, len(piece))
        if i + window_tokens >= len(offs):
            return
        i += step


class CutCache:
    """How texts were cut into windows (token count and window slices), per text: a conversation
    resends every earlier message with each turn, and re-tokenizing all of them only to find the same
    windows again made the router's per-request work grow with the conversation. Bounded (least
    recently used out); keys are hashes, so the cache holds no text. Thread-safe (plans of long inputs
    run in a worker thread)."""

    def __init__(self, max_entries: int = 8192):
        self.max_entries = max_entries
        self._data: OrderedDict[bytes, tuple[int, tuple[tuple[int, int, int], ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(window_tokens: int, overlap: int, text: str) -> bytes:
        h = hashlib.blake2b(f"{window_tokens}:{overlap}".encode(), digest_size=16)
        h.update(text.encode("utf-8", "surrogatepass"))
        return h.digest()

    def get(self, key: bytes) -> tuple[int, tuple[tuple[int, int, int], ...]] | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: bytes, value: tuple[int, tuple[tuple[int, int, int], ...]]) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def _plan_from_cuts(
    tokenizer: Tokenizer, texts: Sequence[str], window_tokens: int, overlap: int, budget: int, cuts: CutCache
) -> WindowPlan | None:
    """The plan when every text is small and all of them fit the budget (the common case), from the
    per-text cuts; None otherwise (the caller plans the long way)."""
    windows: list[Window] = []
    used = 0
    for i, text in enumerate(texts):
        if len(text) > _SMALL_TEXT:
            return None
        key = cuts.key(window_tokens, overlap, text)
        hit = cuts.get(key)
        if hit is None:
            offs = _offsets(tokenizer, text, 0)
            hit = (
                len(offs),
                tuple((w.start, w.start + len(w.text), w.tokens) for w in _cut(text, i, offs, window_tokens, overlap)),
            )
            cuts.put(key, hit)
        used += hit[0]
        if used > budget:
            return None
        windows += [Window(text[s:e], i, s, n) for s, e, n in hit[1]]
    return WindowPlan(windows, used, True, used)


def plan_windows(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    window_tokens: int,
    overlap: int,
    budget: int,
    head_tail: bool,
    cuts: CutCache | None = None,
) -> WindowPlan:
    """Windows over ``texts`` (in order) covering at most ``budget`` tokens in all.

    When everything fits, every token is covered. When it does not, ``complete`` is False and, with
    ``head_tail``, the windows cover the first and the last ``budget // 2`` tokens of the whole
    sequence of texts (attacks and secrets tend to sit at either end); without it, none are built
    (the caller refuses the request). ``cuts`` remembers how each text was cut (same windows, less
    tokenizing on the next turn of a conversation).
    """
    if window_tokens < 1 or budget < 1 or not 0 <= overlap < window_tokens:
        raise ValueError("need window_tokens >= 1, budget >= 1 and 0 <= overlap < window_tokens")
    if cuts is not None:
        plan = _plan_from_cuts(tokenizer, texts, window_tokens, overlap, budget, cuts)
        if plan is not None:
            return plan
    per_text: list[list[tuple[int, int]]] = []
    used = 0
    complete = True
    for text in texts:
        offs, ended = _head_offsets(tokenizer, text, budget - used)
        per_text.append(offs)
        used += len(offs)
        if not ended:  # this text alone holds more tokens than the budget has left
            complete = False
            break
    if complete:
        every = [w for i, offs in enumerate(per_text) for w in _cut(texts[i], i, offs, window_tokens, overlap)]
        return WindowPlan(every, used, True, used)

    chars = sum(len(t) for t in texts)
    approx = max(budget + 1, chars // 4)  # about 4 characters per token for English text
    if not head_tail:
        return WindowPlan([], 0, False, approx)
    # Head: the first budget/2 tokens; tail: the last budget/2, walking texts from the end.
    half = max(1, budget // 2)
    windows: list[Window] = []
    left = half
    for i, offs in enumerate(per_text):
        if left <= 0:
            break
        windows += _cut(texts[i], i, offs[:left], window_tokens, overlap)
        left -= len(offs[:left])
    tail: list[Window] = []
    left = budget - half
    for i in range(len(texts) - 1, -1, -1):
        if left <= 0:
            break
        offs = _tail_offsets(tokenizer, texts[i], left)
        tail = list(_cut(texts[i], i, offs, window_tokens, overlap)) + tail
        left -= len(offs)
    return WindowPlan(windows + tail, budget - max(left, 0), False, approx)


# A message this short is judged together with its neighbours: alone, a word like "sunny" (a tool
# result) or "yes" is out of any classifier's distribution (the jailbreak model scored "sunny" 0.9999),
# and a thousand one-line turns are a thousand chances of a false alarm.
SHORT_WINDOW_TOKENS = 16


def pack_short(windows: Sequence[Window], window_tokens: int, short: int = SHORT_WINDOW_TOKENS) -> list[Window]:
    """Each short window (under ``short`` tokens) is read with one neighbour: the window before it, or
    the one after it when it is the first or the one before does not fit in ``window_tokens`` (one
    token per joining newline counted). Other windows are read as they are. At most as many windows,
    each short one at most doubled, so the work stays within twice the signal's token budget.

    One neighbour, not a whole run of short turns: a 15-token injection as an assistant turn between
    "Hello" and a one-line question scored 0.9997 alone, 0.9996 after "Hello" and 0.83 with the question
    appended too; packing a run together let the benign turns outvote the attack."""
    out: list[Window] = []
    for i, w in enumerate(windows):
        prev = windows[i - 1] if i else None
        nxt = windows[i + 1] if i + 1 < len(windows) else None
        if w.tokens >= short:
            out.append(w)
        elif prev is not None and prev.tokens + w.tokens + 1 <= window_tokens:
            out.append(Window(f"{prev.text}\n{w.text}", w.source, w.start, prev.tokens + w.tokens + 1))
        elif nxt is not None and w.tokens + nxt.tokens + 1 <= window_tokens:
            out.append(Window(f"{w.text}\n{nxt.text}", w.source, w.start, w.tokens + nxt.tokens + 1))
        else:
            out.append(w)
        if len(out) > 1 and out[-1].text == out[-2].text:  # two short turns joined to each other, twice
            out.pop()
    return out
