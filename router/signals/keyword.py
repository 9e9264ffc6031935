"""Keyword signal: any / all / none of a list, matched as whole words, substrings or regexes."""

from __future__ import annotations

import re

from router.config.signals import KeywordSignal as KeywordSpec
from router.signals.base import Signal, SignalContext, SignalResult

# Scripts written without spaces between words: a keyword edge in one of these needs no word boundary
# (「機械学習」 inside 「機械学習とは」 is still the keyword).
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f]")


def _word(keyword: str) -> str:
    left = "" if _UNSPACED.match(keyword[:1]) else r"(?<!\w)"
    right = "" if _UNSPACED.match(keyword[-1:]) else r"(?!\w)"
    return f"{left}{re.escape(keyword)}{right}"


class KeywordSignal(Signal):
    type = "keyword"

    def __init__(self, spec: KeywordSpec):
        super().__init__(spec)
        self.spec: KeywordSpec = spec
        flags = 0 if spec.case_sensitive else re.IGNORECASE
        if spec.method == "regex":
            sources = list(spec.keywords)
        elif spec.method == "word":
            # \b fails next to non-word characters ("c++"), so bound by "not a word char" instead.
            sources = [_word(k) for k in spec.keywords]
        else:
            sources = [re.escape(k) for k in spec.keywords]
        self._patterns = [re.compile(s, flags) for s in sources]
        # One alternation answers "any"/"none" in a single scan of the text.
        self._any = re.compile("|".join(f"(?:{s})" for s in sources), flags)

    def evaluate_now(self, ctx: SignalContext) -> SignalResult:
        text = ctx.last_user_text
        op = self.spec.operator
        if op == "all":
            found = [k for p, k in zip(self._patterns, self.spec.keywords) if p.search(text)]
            matched = len(found) == len(self._patterns)
        else:
            m = self._any.search(text)
            found = [m.group(0)] if m else []
            matched = bool(m) if op == "any" else not m
        return SignalResult(self.type, self.name, matched, detail={"found": found[:5]} if found else None)

    def describe(self) -> str:
        return f"{self.spec.operator} of {len(self.spec.keywords)} {self.spec.method} keywords"
