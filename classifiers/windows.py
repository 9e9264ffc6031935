"""Cut texts into model-sized windows without ever tokenizing more than a budget.

A Hugging Face tokenizer with truncation still tokenizes the whole input (and keeps every overflow
window), so a 1 MB prompt costs gigabytes before the model runs. Here a text is tokenized in bounded
character chunks, only until the token budget is reached; the windows are slices of the original text
(by token offsets), each at most ``window_tokens`` tokens, overlapping by ``overlap`` tokens so an
entity on a boundary is seen whole in one of them.
"""

from __future__ import annotations

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
        yield Window(text[s:e], source, s)
        if i + window_tokens >= len(offs):
            return
        i += step


def plan_windows(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    window_tokens: int,
    overlap: int,
    budget: int,
    head_tail: bool,
) -> WindowPlan:
    """Windows over ``texts`` (in order) covering at most ``budget`` tokens in all.

    When everything fits, every token is covered. When it does not, ``complete`` is False and, with
    ``head_tail``, the windows cover the first and the last ``budget // 2`` tokens of the whole
    sequence of texts (attacks and secrets tend to sit at either end); without it, none are built
    (the caller refuses the request).
    """
    if window_tokens < 1 or budget < 1 or not 0 <= overlap < window_tokens:
        raise ValueError("need window_tokens >= 1, budget >= 1 and 0 <= overlap < window_tokens")
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
        windows = [w for i, offs in enumerate(per_text) for w in _cut(texts[i], i, offs, window_tokens, overlap)]
        return WindowPlan(windows, used, True, used)

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
