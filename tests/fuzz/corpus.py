"""A bounded, seeded corpus of hostile requests, each with the answers it may legitimately get.

``generate(seed, count, profile)`` is deterministic: case ``i`` depends only on ``(seed, i)``, so one
failing case re-runs alone with ``bench/fuzz.py --seed S --only <id>``. Categories take turns by weight;
inside a category the variants are walked in order (so a few hundred cases cover every variant) and
the seed picks the rest (placement, entry path, streaming, filler, which phrase).

``expect`` is what a correct gateway answers for that input on the default config, written from the
contract (OpenAI-shaped 4xx for bad input, 403/422 for guarded content, 200 otherwise), never from
what the router happens to answer today.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fuzz import hostile as T
from tests.fuzz.wire import build, chunked

CHAT = "/v1/chat/completions"
MAX_BODY = 16 * 1024 * 1024  # global.router.max_body_bytes of the default config
Profile = Literal["ci", "full"]
LeakKind = Literal["jailbreak", "card", "email"]

# Entry paths of the default config: auto alias, Fusion slug, a concrete model, a request-level panel.
ENTRIES: tuple[str, ...] = ("auto", "fusion", "model", "plugin")
_PANEL = ["qwen3-8b", "qwen3-coder"]
_JSON = [("content-type", "application/json")]


@dataclass
class Case:
    id: str
    category: str
    variant: str
    request: bytes  # the exact bytes sent
    method: str
    expect: frozenset[int]
    leaks: tuple[tuple[LeakKind, str], ...] = ()  # text that must never reach a backend
    forged: tuple[str, ...] = ()  # header values that must never come back to the client
    debug: bool = False  # the client sent the debug header without any credential
    stream: bool = False
    repro: str = ""  # the request in short (long strings and deep nesting elided)
    timeout_s: float = 60.0
    meta: dict[str, Any] = field(default_factory=dict)

    def brief(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "variant": self.variant,
            "expect": sorted(self.expect),
            "bytes": len(self.request),
            "repro": self.repro,
        }


# --------------------------------------------------------------------------- building blocks


def describe(value: Any, depth: int = 0) -> Any:
    """A JSON value with long strings and deep nesting elided, for a readable repro."""
    if depth > 6:
        return f"<{_depth(value)} more levels>"
    if isinstance(value, str):
        return value if len(value) <= 160 else f"<{value[:60]!r}... {len(value)} chars>"
    if isinstance(value, list):
        items = [describe(v, depth + 1) for v in value[:6]]
        return [*items, f"<... {len(value) - 6} more items>"] if len(value) > 6 else items
    if isinstance(value, dict):
        return {k: describe(v, depth + 1) for k, v in list(value.items())[:20]}
    return value


def _depth(value: Any) -> int:
    d = 0
    while isinstance(value, (list, dict)) and value:
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
        d += 1
    return d


def nested(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def nested_json(depth: int, kind: str) -> str:
    """Deep JSON text built without recursion (json.dumps would hit Python's recursion limit)."""
    if kind == "list":
        return "[" * depth + '"leaf"' + "]" * depth
    return '{"a":' * depth + '"leaf"' + "}" * depth


def chat(messages: list[dict[str, Any]], entry: str = "auto", stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "auto", "messages": messages}
    if entry == "fusion":
        body["model"] = "vllm-sr/fusion"
    elif entry == "model":
        body["model"] = "qwen3-8b"
    elif entry == "plugin":
        body["model"] = "qwen3-32b"
        body["plugins"] = [{"id": "fusion", "analysis_models": list(_PANEL)}]
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _prompt_for(entry: str, rng: random.Random) -> str:
    # The Fusion slug only serves Fusion decisions: give it a research question so 200 is the right answer.
    return T.RESEARCH if entry == "fusion" else rng.choice(T.BENIGN)


class Builder:
    """Makes Cases for one generator call; ``json_case`` and ``raw_case`` fill in the request bytes."""

    def __init__(self, case_id: str, category: str, variant: str):
        self.id, self.category, self.variant = case_id, category, variant

    def json_case(
        self,
        body: Any,
        expect: set[int] | frozenset[int],
        *,
        headers: list[tuple[str, str]] | None = None,
        path: str = CHAT,
        method: str = "POST",
        **kw: Any,
    ) -> Case:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        hdrs = [*_JSON, *(headers or [])]
        shown = json.dumps(describe(body))[:1500] if not isinstance(body, bytes) else _show_bytes(body)
        hshow = "".join(f" -H '{k}: {v if len(v) < 80 else v[:40] + f'...({len(v)} chars)'}'" for k, v in (headers or []))
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        return Case(
            self.id,
            self.category,
            self.variant,
            build(method, path, hdrs, data),
            method,
            frozenset(expect),
            stream=kw.pop("stream", stream),
            repro=f"{method} {path}{hshow} {shown}",
            **kw,
        )

    def raw_case(
        self, data: bytes, expect: set[int] | frozenset[int], method: str = "POST", repro: str | None = None, **kw: Any
    ) -> Case:
        return Case(self.id, self.category, self.variant, data, method, frozenset(expect), repro=repro or _show_bytes(data), **kw)


def _show_bytes(data: bytes) -> str:
    head = repr(data[:240])
    return head + (f" ...({len(data)} bytes)" if len(data) > 240 else "")


Generator = Callable[[Builder, random.Random, int, Profile], Case]


# --------------------------------------------------------------------------- malformed JSON

_GOOD = {"model": "auto", "messages": [{"role": "user", "content": "Tell me something nice about autumn"}]}
_GOOD_BYTES = json.dumps(_GOOD).encode()

_MALFORMED: tuple[tuple[str, bytes, set[int]], ...] = (
    ("truncated_array", b'{"model": "auto", "messages": [', {400}),
    ("truncated_string", b'{"model": "auto", "messages": [{"role": "user", "content": "hel', {400}),
    ("trailing_garbage", _GOOD_BYTES + b"}}]]", {400}),
    ("two_documents", _GOOD_BYTES + b"\n" + _GOOD_BYTES, {400}),
    ("invalid_utf8_in_string", b'{"model": "auto", "messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}]}', {400}),
    ("overlong_utf8", b'{"model": "auto", "messages": [{"role": "user", "content": "\xc0\xaf\xc0\xaf"}]}', {400}),
    ("lone_surrogate_escape", b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800 x"}]}', {200, 400}),
    ("nan_literal", b'{"model": "auto", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}', {400}),
    ("infinity_literal", b'{"model": "auto", "top_p": -Infinity, "messages": [{"role": "user", "content": "hi"}]}', {400}),
    ("huge_exponent", b'{"model": "auto", "temperature": 1e400, "messages": [{"role": "user", "content": "hi"}]}', {400}),
    ("single_quotes", b"{'model': 'auto', 'messages': [{'role': 'user', 'content': 'hi'}]}", {400}),
    ("empty_body", b"", {400}),
    ("whitespace_body", b" \n\t ", {400}),
    ("top_level_array", b'[{"model": "auto"}]', {400}),
    ("top_level_string", b'"model"', {400}),
    ("top_level_null", b"null", {400}),
    ("top_level_number", b"12345678901234567890123456789", {400}),
    ("nul_bytes", b'{"model": "auto",\x00 "messages": []}', {400}),
    ("utf16_with_bom", "\ufeff".encode("utf-16-le") + json.dumps(_GOOD).encode("utf-16-le"), {400}),
    ("utf8_bom_prefix", b"\xef\xbb\xbf" + _GOOD_BYTES, {200, 400}),
    ("duplicate_keys", b'{"model": "auto", "model": 5, "messages": [{"role": "user", "content": "hi"}]}', {400}),
    ("comment", b'{"model": "auto", /* hi */ "messages": [{"role": "user", "content": "hi"}]}', {400}),
    ("unescaped_control_char", b'{"model": "auto", "messages": [{"role": "user", "content": "a\x01\x02b"}]}', {400}),
    ("gzip_bytes", zlib.compress(_GOOD_BYTES), {400, 415}),
)


def g_malformed(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    name, data, expect = _MALFORMED[k % len(_MALFORMED)]
    if k >= len(_MALFORMED):  # later rounds: a good body cut at a random byte
        name, cut = "truncated_at_random", rng.randrange(1, len(_GOOD_BYTES) - 1)
        data, expect = _GOOD_BYTES[:cut], {400}
    b.variant = name
    return b.raw_case(build("POST", CHAT, _JSON, data), expect, repro=f"POST {CHAT} body={_show_bytes(data)}")


# --------------------------------------------------------------------------- wrong types

_ANY = {200, 400}
# (field, value, expected): fields the router types must answer 400; fields it passes on may pass.
_WRONG: tuple[tuple[str, Any, set[int]], ...] = (
    ("model", 7, {400}),
    ("model", None, {400}),
    ("model", ["auto"], {400}),
    ("model", {"id": "auto"}, {400}),
    ("model", "", {400}),
    ("model", True, {400}),
    ("messages", None, {400}),
    ("messages", {"role": "user"}, {400}),
    ("messages", "hi", {400}),
    ("messages", [1], {400}),
    ("messages", [None], {400}),
    ("messages", [[]], {400}),
    ("messages", [{}], {400}),
    ("messages[0].role", 5, {400}),
    ("messages[0].role", "USER", {400}),
    ("messages[0].role", None, {400}),
    ("messages[0].content", 5, {400}),
    ("messages[0].content", {"text": "hi"}, {400}),
    ("messages[0].content", [5], {400}),
    ("messages[0].content", [{"type": "text", "text": 5}], {400}),
    ("messages[0].content", [{}], {400}),
    ("messages[0].content", True, {400}),
    ("messages[0].name", 5, {400}),
    ("messages[0].tool_calls", "x", {400}),
    ("messages[0].tool_calls", [{"function": "x"}], {400}),
    ("messages[0].tool_call_id", 5, {400}),
    ("stream", "yes", {400}),
    ("stream", 1, {400}),
    ("stream", None, {200}),
    ("stream_options", "x", {400}),
    ("stream_options", [], {400}),
    ("tools", "x", {400}),
    ("tools", [1], {400}),
    ("tools", {"type": "function"}, {400}),
    ("tool_choice", 5, {400}),
    ("tool_choice", [], {400}),
    ("max_tokens", -1, {400}),
    ("max_tokens", 0, {400}),
    ("max_tokens", 1.5, {400}),
    ("max_tokens", "lots", {400}),
    ("max_tokens", [], {400}),
    ("max_tokens", 10**30, _ANY),
    ("max_completion_tokens", -5, {400}),
    ("temperature", "hot", {400}),
    ("temperature", -1, {400}),
    ("temperature", 3, {400}),
    ("temperature", [], {400}),
    ("top_p", 2, {400}),
    ("top_p", "x", {400}),
    ("n", 0, {400}),
    ("n", "x", {400}),
    ("plugins", "fusion", {400}),
    ("plugins", {"id": "fusion"}, {400}),
    ("plugins", [1, "x", None], _ANY),
    # Not typed by the router: a backend would judge them; the gateway may pass them or refuse them.
    ("user", 5, _ANY),
    ("seed", "x", _ANY),
    ("stop", 5, _ANY),
    ("response_format", "json", _ANY),
    ("logit_bias", [], _ANY),
    ("presence_penalty", "x", _ANY),
    ("metadata", 5, _ANY),
    ("parallel_tool_calls", "x", _ANY),
    ("logprobs", "x", _ANY),
    ("frequency_penalty", {}, _ANY),
)


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    if path.startswith("messages[0]."):
        body["messages"][0][path.split(".", 1)[1]] = value
    else:
        body[path] = value


def g_wrong_types(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    path, value, expect = _WRONG[k % len(_WRONG)]
    entry = rng.choice(ENTRIES) if k >= len(_WRONG) else "auto"
    body = chat([user(_prompt_for(entry, rng))], entry)
    _set(body, path, value)
    b.variant = f"{path}={json.dumps(value)[:20]}@{entry}"
    return b.json_case(body, expect, stream=body.get("stream") is True)


# --------------------------------------------------------------------------- deep nesting

_DEPTHS_CI = (64, 254, 255, 256, 600, 1023, 1024, 1025, 20000)
_DEPTHS_FULL = (*_DEPTHS_CI, 300, 511, 512, 513, 900, 4096, 100000)
# Where the deep value goes; 400 is right where the router types the field, either is right elsewhere.
_NEST_PLACES = (
    "metadata",
    "messages[0].extra",
    "tools[0].function.parameters",
    "response_format",
    "tool_choice",
    "plugins[0].reasoning",
    "stream_options.extra",
    "messages[0].content[1]",
    "user",
)


def g_deep_nesting(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    depths = _DEPTHS_CI if profile == "ci" else _DEPTHS_FULL
    depth = depths[k % len(depths)]
    place = _NEST_PLACES[(k // len(depths) + k) % len(_NEST_PLACES)]
    kind = rng.choice(("list", "dict"))
    entry = rng.choice(("auto", "fusion", "plugin"))
    stream = rng.random() < 0.3
    marker = "__DEEP__"
    body = chat([user(_prompt_for(entry, rng))], entry, stream)
    if place == "metadata":
        body["metadata"] = marker
    elif place == "messages[0].extra":
        body["messages"][0]["extra"] = marker
    elif place == "tools[0].function.parameters":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": marker}}]
    elif place == "response_format":
        body["response_format"] = marker
    elif place == "tool_choice":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        body["tool_choice"] = {"type": "function", "function": {"name": "f", "x": marker}}
    elif place == "plugins[0].reasoning":
        body["model"] = "qwen3-32b"
        body["plugins"] = [{"id": "fusion", "analysis_models": list(_PANEL), "reasoning": marker}]
    elif place == "stream_options.extra":
        body["stream"] = True
        body["stream_options"] = {"include_usage": True, "extra": marker}
    elif place == "messages[0].content[1]":
        body["messages"][0]["content"] = [{"type": "text", "text": body["messages"][0]["content"]}, marker]
    elif place == "user":
        body["user"] = marker
    text = json.dumps(body).replace(json.dumps(marker), nested_json(depth, kind), 1)
    b.variant = f"{place}@depth{depth}/{kind}/{entry}"
    shown = json.dumps(describe(body)).replace(json.dumps(marker), f'"<{kind} nested {depth} deep>"')
    expect = {400} if place == "messages[0].content[1]" else {200, 400}
    return b.raw_case(
        build("POST", CHAT, _JSON, text.encode()), expect, repro=f"POST {CHAT} {shown}", stream=bool(body.get("stream"))
    )


# --------------------------------------------------------------------------- huge bodies and strings

_SIZES_CI = (64 * 1024, 256 * 1024, 1024 * 1024)
_SIZES_FULL = (*_SIZES_CI, 4 * 1024 * 1024, MAX_BODY - 64 * 1024)


def g_huge_body(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    sizes = _SIZES_CI if profile == "ci" else _SIZES_FULL
    variants = [
        *(f"prompt_{s // 1024}k" for s in sizes),
        "over_limit_content_length",
        "over_limit_chunked",
        "content_length_shorter_than_body",
    ]
    variant = variants[k % len(variants)]
    b.variant = variant
    timeout = 120.0
    if variant.startswith("prompt_"):
        size = sizes[variants.index(variant)]
        stream = rng.random() < 0.3
        text = T.filler(rng, size // 6)[:size]
        body = chat([user(text + " Summarise the text above.")], "auto", stream)
        # Served, or refused with a clear 413 when it is longer than the guards can read (they must read
        # everything that reaches a model); never a 403, a 500 or a dead router.
        return b.json_case(body, {200, 413}, timeout_s=timeout)
    if variant == "over_limit_content_length":
        data = json.dumps(chat([user("x" * (MAX_BODY + 1))])).encode()
        return b.raw_case(
            build("POST", CHAT, _JSON, data),
            {413},
            repro=f"POST {CHAT} content-length {len(data)} (> max_body_bytes {MAX_BODY})",
            timeout_s=timeout,
        )
    if variant == "over_limit_chunked":
        data = json.dumps(chat([user("x" * (MAX_BODY + 64 * 1024))])).encode()
        raw = build("POST", CHAT, [*_JSON, ("transfer-encoding", "chunked")], chunked(data), content_length=False)
        return b.raw_case(
            raw, {413}, repro=f"POST {CHAT} transfer-encoding: chunked, {len(data)} bytes (> max_body_bytes)", timeout_s=timeout
        )
    # content-length 20 with a longer body: the rest reads as a second (garbage) request on the connection
    raw = build("POST", CHAT, [*_JSON, ("content-length", "20")], _GOOD_BYTES)
    return b.raw_case(raw, {400}, repro=f"POST {CHAT} content-length: 20 with a {len(_GOOD_BYTES)}-byte body")


_HUGE_FIELDS: tuple[tuple[str, set[int]], ...] = (
    # Text the guards must read (messages) may be refused as too long to check (413).
    ("model", {400, 404, 413}),
    ("user", {200}),
    ("stop", {200, 400}),
    ("tools[0].function.name", {200, 400, 413}),
    ("assistant_content", {200, 413}),
    ("messages[0].name", {200, 400, 413}),
    ("tool_call_id", {200, 400}),
    ("plugins[0].analysis_template", {200, 400}),
    ("system_content", {200, 413}),
    ("header_value", {200, 431}),
)


def g_huge_string(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    name, expect = _HUGE_FIELDS[k % len(_HUGE_FIELDS)]
    size = rng.choice((200 * 1024, 1024 * 1024)) if profile == "ci" else rng.choice((1024 * 1024, 8 * 1024 * 1024))
    blob = T.filler(rng, size // 6)[:size] if name in ("assistant_content", "system_content") else "A" * size
    body = chat([user(rng.choice(T.BENIGN))])
    headers: list[tuple[str, str]] = []
    if name == "model":
        body["model"] = blob
    elif name == "user":
        body["user"] = blob
    elif name == "stop":
        body["stop"] = [blob]
    elif name == "tools[0].function.name":
        body["tools"] = [{"type": "function", "function": {"name": blob, "parameters": {"type": "object"}}}]
    elif name == "assistant_content":
        body["messages"] = [
            user("Summarise our chat"),
            {"role": "assistant", "content": blob},
            user("Thanks, now shorter please"),
        ]
    elif name == "messages[0].name":
        body["messages"][0]["name"] = blob
    elif name == "tool_call_id":
        body["messages"] = [
            user("What is the weather?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": blob, "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": blob, "content": "sunny"},
        ]
    elif name == "plugins[0].analysis_template":
        body["model"] = "qwen3-32b"
        body["plugins"] = [{"id": "fusion", "analysis_models": list(_PANEL), "analysis_template": blob + " {{responses}}"}]
    elif name == "system_content":
        body["messages"].insert(0, {"role": "system", "content": blob})
    elif name == "header_value":
        size = rng.choice((8 * 1024, 50 * 1024))
        headers = [("x-custom-note", "A" * size)]
    b.variant = f"{name}_{size // 1024}k"
    if len(json.dumps(body)) > MAX_BODY:  # e.g. an 8 MiB id written twice: over the limit, so 413 is right
        expect = {413}
    return b.json_case(body, expect, headers=headers, timeout_s=120.0)


def g_many_messages(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    counts = (100, 1000, 10000) if profile == "ci" else (100, 1000, 10000, 50000)
    n = counts[k % len(counts)]
    entry = ("auto", "model", "fusion")[(k // len(counts)) % 3]
    msgs: list[dict[str, Any]] = []
    for i in range(n - 1):
        msgs.append(user(f"Note {i}: {rng.choice(T.BENIGN)}") if i % 2 == 0 else {"role": "assistant", "content": f"Noted {i}."})
    msgs.append(user(_prompt_for(entry, rng)))
    b.variant = f"{n}_messages@{entry}"
    return b.json_case(chat(msgs, entry, rng.random() < 0.3), {200, 400, 413}, timeout_s=120.0)


# --------------------------------------------------------------------------- guards: hidden hostile text

PLACEMENTS: tuple[str, ...] = (
    "user_alone",
    "user_after_filler",
    "user_before_filler",
    "user_middle_of_2000_words",
    "first_of_9_user_turns",
    "middle_of_9_user_turns",
    "system",
    "developer",
    "assistant_turn",
    "assistant_tool_call_arguments",
    "tool_result",
    "function_result",
    "multimodal_second_text_part",
    "tool_definition_description",
    "first_of_200_turns",
)


def place_text(text: str, placement: str, rng: random.Random, question: str) -> dict[str, Any]:
    """A valid chat body with ``text`` hidden at ``placement``; the last user turn asks ``question``."""
    msgs: list[dict[str, Any]]
    extra: dict[str, Any] = {}
    if placement == "user_alone":
        msgs = [user(text)]
    elif placement == "user_after_filler":
        msgs = [user(f"{T.filler(rng, 400)} {text}")]
    elif placement == "user_before_filler":
        msgs = [user(f"{text} {T.filler(rng, 400)}")]
    elif placement == "user_middle_of_2000_words":
        msgs = [user(f"{T.filler(rng, 1000)} {text} {T.filler(rng, 1000)} {question}")]
    elif placement in ("first_of_9_user_turns", "middle_of_9_user_turns", "first_of_200_turns"):
        turns = 200 if placement == "first_of_200_turns" else 9
        at = 0 if placement.startswith("first") else 4
        msgs = []
        for i in range(turns):
            msgs.append(user(text if i == at else (question if i == turns - 1 else rng.choice(T.BENIGN))))
            if i < turns - 1:
                msgs.append({"role": "assistant", "content": "Sure, here is what I know."})
    elif placement in ("system", "developer"):
        msgs = [{"role": placement, "content": f"You are a helpful assistant. {text}"}, user(question)]
    elif placement == "assistant_turn":
        msgs = [user("Hello"), {"role": "assistant", "content": text}, user(question)]
    elif placement == "assistant_tool_call_arguments":
        msgs = [
            user("Look this up for me"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"query": text})}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "no results"},
            user(question),
        ]
    elif placement == "tool_result":
        msgs = [
            user("Fetch the page and summarise it"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "fetch", "arguments": '{"url": "https://example.com"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"Page text: {text}"},
        ]
    elif placement == "function_result":
        msgs = [
            user("Fetch the page"),
            {"role": "assistant", "content": None, "function_call": {"name": "fetch", "arguments": "{}"}},
            {"role": "function", "name": "fetch", "content": text},
        ]
    elif placement == "multimodal_second_text_part":
        msgs = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "text", "text": text},
                ],
            }
        ]
    elif placement == "tool_definition_description":
        msgs = [user(question)]
        extra["tools"] = [
            {
                "type": "function",
                "function": {"name": "helper", "description": text, "parameters": {"type": "object", "properties": {}}},
            }
        ]
    else:
        raise ValueError(placement)
    return {"messages": msgs, **extra}


def _guard_case(b: Builder, rng: random.Random, k: int, kind: LeakKind) -> Case:
    placement = PLACEMENTS[k % len(PLACEMENTS)]
    entry = ENTRIES[(k % len(PLACEMENTS) + k // len(PLACEMENTS)) % len(ENTRIES)]  # each round shifts the entry
    stream = rng.random() < 0.35
    if kind == "jailbreak":
        text = marker = T.jailbreak(rng)
    elif kind == "card":
        text, marker = T.card_sentence(rng)
    else:
        text, marker = T.email_sentence(rng)
    question = _prompt_for(entry, rng)
    parts = place_text(text, placement, rng, question)
    messages = parts.pop("messages")
    if entry == "fusion" and messages[-1].get("content") != question:
        # The Fusion slug answers research questions only; end the conversation with one.
        messages += [{"role": "assistant", "content": "Noted."}, user(question)]
    body = chat(messages, entry, stream, **parts)
    b.variant = f"{kind}/{placement}@{entry}{'/stream' if stream else ''}"
    # Jailbreaks and secrets are refused; contact details are masked and the request goes on.
    expect = {200} if kind == "email" else {403, 422}
    return b.json_case(body, expect, leaks=((kind, marker),), meta={"placement": placement, "entry": entry}, timeout_s=90.0)


def g_guard_jailbreak(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    return _guard_case(b, rng, k, "jailbreak")


def g_guard_card(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    return _guard_case(b, rng, k, "card")


def g_guard_email(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    return _guard_case(b, rng, k, "email")


# --------------------------------------------------------------------------- headers

_FORGEABLE = (
    "x-vsr-selected-decision",
    "x-vsr-selected-model",
    "x-vsr-response-path",
    "x-vsr-entry-path",
    "x-vsr-matched-signals",
    "x-vsr-fusion-panel",
    "x-vsr-fusion-analysis-status",
    "x-vsr-cluster",
    "x-vsr-looper-token",
    "x-vsr-anything",
)
_HEADER_VARIANTS = (
    "forged_vsr_benign",
    "forged_vsr_fusion",
    "forged_vsr_bad_json",
    "forged_vsr_jailbreak",
    "forged_vsr_unknown_model",
    "forged_vsr_models_list",
    "forged_vsr_wrong_path",
    "debug_header",
    "debug_header_jailbreak",
    "header_70k",
    "headers_200",
    "content_type_form",
    "content_type_html",
    "content_type_multipart",
    "content_type_json_latin1",
    "content_type_missing",
    "content_encoding_gzip",
    "expect_100_continue",
    "host_garbage",
    "forged_request_id",
)


def g_headers(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    v = _HEADER_VARIANTS[k % len(_HEADER_VARIANTS)]
    b.variant = v
    stream = rng.random() < 0.3
    good = chat([user(rng.choice(T.BENIGN))], "auto", stream)
    if v.startswith("forged_vsr"):
        names = rng.sample(_FORGEABLE, rng.randint(2, len(_FORGEABLE)))
        tag = f"FORGED{rng.randrange(16**8):08x}"
        if v == "forged_vsr_benign":
            names = list(_FORGEABLE)  # every name at least once in CI
        headers = [(n, f"{tag}-{n.removeprefix('x-vsr-')}") for n in names]
        forged = tuple(v2 for _, v2 in headers)
        body: Any = good
        expect: set[int] = {200}
        method, path = "POST", CHAT
        if v == "forged_vsr_fusion":
            body = chat([user(T.RESEARCH)], "fusion", stream)
        elif v == "forged_vsr_bad_json":
            body, expect = b'{"model": "auto", "messages": [', {400}
        elif v == "forged_vsr_jailbreak":
            body, expect = chat([user(T.jailbreak(rng))], "auto", stream), {403}
        elif v == "forged_vsr_unknown_model":
            body, expect = chat([user("hi")], "auto", stream, model="gpt-9000"), {404}
        elif v == "forged_vsr_models_list":
            return b.raw_case(
                build("GET", "/v1/models", headers, None),
                {200},
                method="GET",
                forged=forged,
                repro="GET /v1/models " + " ".join(f"-H '{h}: {x}'" for h, x in headers),
            )
        elif v == "forged_vsr_wrong_path":
            path, expect = "/v1/embeddings", {404}
        return b.json_case(body, expect, headers=headers, path=path, method=method, forged=forged)
    if v == "debug_header":
        return b.json_case(good, {200}, headers=[("x-vsr-debug", "1")], debug=True)
    if v == "debug_header_jailbreak":
        return b.json_case(chat([user(T.jailbreak(rng))]), {403}, headers=[("x-vsr-debug", "true")], debug=True)
    if v == "header_70k":
        return b.json_case(good, {431}, headers=[("x-note", "A" * 70 * 1024)])
    if v == "headers_200":
        return b.json_case(good, {431}, headers=[(f"x-h-{i}", "v") for i in range(200)])
    if v.startswith("content_type_"):
        ctype = {
            "form": "application/x-www-form-urlencoded",
            "html": "text/html",
            "multipart": "multipart/form-data; boundary=x",
            "json_latin1": "application/json; charset=latin-1",
            "missing": None,
        }[v.removeprefix("content_type_")]
        expect = {415} if v in ("content_type_form", "content_type_html", "content_type_multipart") else {200, 415}
        data = json.dumps(good).encode()
        hdrs = [("content-type", ctype)] if ctype else []
        return b.raw_case(
            build("POST", CHAT, hdrs, data), expect, repro=f"POST {CHAT} content-type: {ctype} {json.dumps(describe(good))}"
        )
    if v == "content_encoding_gzip":
        return b.json_case(good, {400, 415}, headers=[("content-encoding", "gzip")])
    if v == "expect_100_continue":
        return b.json_case(good, {200}, headers=[("expect", "100-continue")])
    if v == "host_garbage":
        data = json.dumps(good).encode()
        raw = (
            f"POST {CHAT} HTTP/1.1\r\nhost: {'h' * 3000}.example\r\nconnection: close\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        ).encode() + data
        return b.raw_case(raw, {200, 400})
    # forged x-request-id: Envoy may keep it; it is the client's own value, so only the shape matters.
    return b.json_case(good, {200}, headers=[("x-request-id", "'; DROP TABLE requests; --")])


# --------------------------------------------------------------------------- methods and paths

_METHOD_PATHS: tuple[tuple[str, str, bool, set[int]], ...] = (
    ("GET", CHAT, False, {405}),
    ("PUT", CHAT, True, {405}),
    ("DELETE", CHAT, False, {405}),
    ("PATCH", CHAT, True, {405}),
    ("OPTIONS", CHAT, False, {405}),
    ("HEAD", CHAT, False, {405}),
    ("FOO", CHAT, True, {400, 405, 501}),
    ("POST", "/v1/embeddings", True, {404}),
    ("POST", "/v1/completions", True, {404}),
    ("POST", "/", True, {404}),
    ("GET", "/", False, {404}),
    ("POST", "/v1", True, {404}),
    ("POST", CHAT + "/extra", True, {404}),
    ("POST", "/V1/CHAT/COMPLETIONS", True, {404}),
    ("POST", "/v1/chat%2Fcompletions", True, {404}),
    ("POST", CHAT + "/../../../etc/passwd", True, {400, 404}),
    ("POST", "/" + CHAT, True, {200, 404}),
    ("POST", "/v1/models/../chat/completions", True, {200, 404, 405}),
    ("POST", CHAT + "?stream=true&x=%00", True, {200}),
    ("POST", "/v1/" + "a" * 4096, True, {404, 414}),
    ("POST", "/v1/" + "a" * 70 * 1024, True, {404, 414, 431}),
    ("POST", "http://evil.example" + CHAT, True, {200, 400, 404}),
    ("OPTIONS", "*", False, {400, 404, 405}),
    ("GET", "/v1/models", False, {200}),
    ("POST", "/v1/models", True, {405}),
    ("GET", "/v1/models/" + "m" * 10000, False, {404}),
    ("GET", "/v1/models/auto", False, {200}),
    ("GET", "/v1/models/%2e%2e%2f%2e%2e%2fetc", False, {404}),
    ("GET", "/healthz", False, {404}),
    ("GET", "/_sim/requests", False, {404}),
    ("GET", "/metrics", False, {404}),
)


def g_methods_paths(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    method, path, has_body, expect = _METHOD_PATHS[k % len(_METHOD_PATHS)]
    b.variant = f"{method} {path[:48]}"
    body = json.dumps(chat([user(rng.choice(T.BENIGN))])).encode() if has_body else None
    raw = build(method, path, _JSON if has_body else [], body)
    shown = f"{method} {path if len(path) < 120 else path[:60] + f'...({len(path)} chars)'}" + (
        " <benign chat body>" if has_body else ""
    )
    return b.raw_case(raw, expect, method=method, repro=shown)


# --------------------------------------------------------------------------- malformed HTTP (Envoy answers)

_BODY = json.dumps(_GOOD).encode()
_MALFORMED_HTTP: tuple[tuple[str, bytes, set[int]], ...] = (
    ("garbage_request_line", b"HELLO THERE\r\n\r\n", {400}),
    ("bad_version", b"POST /v1/chat/completions HTTP/9.9\r\nhost: x\r\n\r\n", {400, 426, 505}),
    (
        "two_content_lengths",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 5\r\ncontent-length: %d\r\n\r\n" % len(_BODY) + _BODY,
        {400},
    ),
    ("negative_content_length", b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n" + _BODY, {400}),
    ("alpha_content_length", b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n" + _BODY, {400}),
    (
        "te_gzip_chunked",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n" + chunked(_BODY),
        {400, 501},
    ),
    (
        "te_and_cl",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n" + chunked(_BODY),
        {200, 400},
    ),
    (
        "bad_chunk_size",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\nzz\r\n" + _BODY + b"\r\n0\r\n\r\n",
        {400},
    ),
    (
        "space_in_header_name",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nbad header: 1\r\ncontent-length: %d\r\n\r\n" % len(_BODY) + _BODY,
        {400},
    ),
    (
        "nul_in_header_value",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\ncontent-length: %d\r\n\r\n" % len(_BODY) + _BODY,
        {400},
    ),
    (
        "bare_lf_lines",
        b"POST /v1/chat/completions HTTP/1.1\nhost: x\ncontent-type: application/json\ncontent-length: %d\n\n" % len(_BODY)
        + _BODY,
        {200, 400},
    ),
    (
        "obsolete_line_folding",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-a: a\r\n  folded\r\ncontent-length: %d\r\n\r\n" % len(_BODY) + _BODY,
        {200, 400},
    ),
    (
        "http10_no_length",
        b"POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\n\r\n" + _BODY,
        {200, 400, 411, 426},
    ),
    (
        "upgrade_h2c",
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
            b"http2-settings: AAMAAABkAAQAAP__\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        )
        % len(_BODY)
        + _BODY,
        {200, 400},
    ),
    (
        "websocket_upgrade",
        (
            b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        ),
        {400, 403, 404, 405},
    ),
)


def g_malformed_http(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    name, data, expect = _MALFORMED_HTTP[k % len(_MALFORMED_HTTP)]
    b.variant = name
    method = "GET" if data.startswith(b"GET") else "POST"
    return b.raw_case(data, expect, method=method, timeout_s=30.0)


# --------------------------------------------------------------------------- tools and streaming

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
_TOOL_VARIANTS = (
    "auto",
    "required",
    "none",
    "named",
    "named_missing",
    "empty_tools",
    "many_tools",
    "huge_schema",
    "tool_loop",
    "fusion_tools",
    "stream_usage",
    "stream_fusion_usage",
    "parallel_tool_calls",
    "n_3",
)


def g_tools_streaming(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    v = _TOOL_VARIANTS[k % len(_TOOL_VARIANTS)]
    b.variant = v
    stream = rng.random() < 0.5
    ask = user("What is the weather in Paris?")
    expect: set[int] = {200}
    if v in ("auto", "required", "none"):
        body = chat([ask], "auto", stream, tools=[_WEATHER_TOOL], tool_choice=v)
    elif v == "named":
        body = chat(
            [ask], "auto", stream, tools=[_WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}
        )
    elif v == "named_missing":
        body = chat([ask], "auto", stream, tools=[_WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}})
        expect = {200, 400}
    elif v == "empty_tools":
        body, expect = chat([ask], "auto", stream, tools=[]), {200, 400}
    elif v == "many_tools":
        tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}} for i in range(256)]
        body = chat([ask], "auto", stream, tools=tools)
    elif v == "huge_schema":
        props = {f"p{i}": {"type": "string", "description": "d" * 200} for i in range(500)}
        body = chat(
            [ask],
            "auto",
            stream,
            tools=[{"type": "function", "function": {"name": "big", "parameters": {"type": "object", "properties": props}}}],
        )
    elif v == "tool_loop":
        body = chat(
            [
                ask,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
            ],
            "auto",
            stream,
            tools=[_WEATHER_TOOL],
        )
    elif v == "fusion_tools":
        body = chat([user(T.RESEARCH)], "fusion", stream, tools=[_WEATHER_TOOL])
    elif v == "stream_usage":
        body = chat([user(rng.choice(T.BENIGN))], "auto", True, stream_options={"include_usage": True})
    elif v == "stream_fusion_usage":
        body = chat([user(T.RESEARCH)], "fusion", True, stream_options={"include_usage": True})
    elif v == "parallel_tool_calls":
        body = chat([ask], "auto", stream, tools=[_WEATHER_TOOL], parallel_tool_calls=False)
    else:
        body, expect = chat([user(rng.choice(T.BENIGN))], rng.choice(("auto", "fusion")), stream, n=3), {200, 400}
        if body["model"] == "vllm-sr/fusion":
            body["messages"] = [user(T.RESEARCH)]
    b.variant = f"{v}{'/stream' if body.get('stream') else ''}"
    return b.json_case(body, expect)


# --------------------------------------------------------------------------- Fusion plugin values

_PLUGIN_BAD: tuple[tuple[str, Any, set[int]], ...] = (
    ("panel_timeout_seconds", 1e-9, {400}),
    ("panel_timeout_seconds", 0, {400}),
    ("panel_timeout_seconds", -1, {400}),
    ("panel_timeout_seconds", "fast", {400}),
    ("panel_timeout_seconds", 1e308, {200, 400}),
    ("judge_timeout_seconds", 1e-9, {400}),
    ("synthesis_timeout_seconds", 1e-9, {400}),
    ("analysis_models", [], {400}),
    ("analysis_models", ["nope"], {400}),
    ("analysis_models", ["auto"], {400}),
    ("analysis_models", ["vllm-sr/fusion"], {400}),
    ("analysis_models", ["qwen3-8b"] * 9, {400}),
    ("analysis_models", [5], {400}),
    ("analysis_models", "qwen3-8b", {400}),
    ("analysis_models", ["qwen3-8b"] * 8, {200, 400}),
    ("max_concurrent", 0, {400}),
    ("max_concurrent", -5, {400}),
    ("max_concurrent", 10**12, {200, 400}),
    ("min_successful_responses", 99, {400, 502}),
    ("min_successful_responses", 0, {400}),
    ("max_completion_tokens", 0, {400}),
    ("max_completion_tokens", 10**12, {200, 400}),
    ("temperature", 5, {400}),
    ("on_error", "explode", {400}),
    ("analysis_template", "", {200, 400}),
    ("analysis_template", "{{original}}" * 5000, {200, 400, 413}),
    ("synthesis_template", "no placeholders at all", {200, 400}),
    ("foo", 1, {400}),
    ("enabled", "maybe", {400}),
    ("model", "vllm-sr/fusion", {400}),
    ("model", "auto", {400}),
    ("model", 12, {400}),
    ("trace", {"body": "x"}, {400}),
    ("trace", "yes", {400}),
    ("id", "fusion ", {200, 400}),
    ("include_analysis", [], {400}),
    ("judge_prompt_version", {"v": 1}, {400}),
)


def g_fusion_plugin(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    key, value, expect = _PLUGIN_BAD[k % len(_PLUGIN_BAD)]
    entry = rng.choice(("plugin", "fusion", "auto"))
    stream = rng.random() < 0.3
    question = T.RESEARCH
    plugin: dict[str, Any] = {"id": "fusion", "analysis_models": list(_PANEL)}
    plugin[key] = value
    body = chat([user(question)], "auto", stream, plugins=[plugin])
    body["model"] = {"plugin": "qwen3-32b", "fusion": "vllm-sr/fusion", "auto": "auto"}[entry]
    b.variant = f"{key}={json.dumps(value)[:24]}@{entry}"
    return b.json_case(body, expect, timeout_s=90.0)


# --------------------------------------------------------------------------- upstream faults on routed requests

_FAULTS: tuple[tuple[str, list[tuple[str, str]], set[int]], ...] = (
    ("backend_401", [("x-sim-mode", "error"), ("x-sim-fail-status", "401")], {401, 502}),
    ("backend_429", [("x-sim-mode", "error"), ("x-sim-fail-status", "429")], {429}),
    ("backend_502", [("x-sim-mode", "error"), ("x-sim-fail-status", "502")], {502}),
    ("backend_503", [("x-sim-mode", "error"), ("x-sim-fail-status", "503")], {503}),
    ("backend_resets_before_answer", [("x-sim-mode", "drop_midstream")], {502, 503}),
)


def g_upstream_fault(b: Builder, rng: random.Random, k: int, profile: Profile) -> Case:
    name, headers, expect = _FAULTS[k % len(_FAULTS)]
    entry = rng.choice(("auto", "model"))
    b.variant = f"{name}@{entry}"
    # Non-streamed: a routed stream that breaks mid-way is the backend's bytes, relayed as they are.
    return b.json_case(chat([user(rng.choice(T.BENIGN))], entry), expect, headers=headers)


# --------------------------------------------------------------------------- the corpus

CATEGORIES: dict[str, tuple[Generator, int]] = {
    "malformed_json": (g_malformed, 3),
    "wrong_types": (g_wrong_types, 6),
    "deep_nesting": (g_deep_nesting, 3),
    "huge_body": (g_huge_body, 1),
    "huge_string": (g_huge_string, 1),
    "many_messages": (g_many_messages, 1),
    "guard_jailbreak": (g_guard_jailbreak, 6),
    "guard_card": (g_guard_card, 6),
    "guard_email": (g_guard_email, 3),
    "headers": (g_headers, 4),
    "methods_paths": (g_methods_paths, 3),
    "malformed_http": (g_malformed_http, 2),
    "tools_streaming": (g_tools_streaming, 2),
    "fusion_plugin": (g_fusion_plugin, 4),
    "upstream_fault": (g_upstream_fault, 1),
}


def schedule(count: int, categories: list[str] | None = None) -> list[tuple[str, int]]:
    """(category, k-th case of that category) for each of ``count`` slots: weighted round robin."""
    names = [c for c in CATEGORIES if categories is None or c in categories]
    if not names:
        raise ValueError(f"no such category; choose from {', '.join(CATEGORIES)}")
    cycle = [n for n in names for _ in range(CATEGORIES[n][1])]
    # Interleave so a short run still touches every category early.
    order = sorted(range(len(cycle)), key=lambda i: (cycle[:i].count(cycle[i]), i))
    cycle = [cycle[i] for i in order]
    seen: dict[str, int] = {}
    out = []
    for i in range(count):
        name = cycle[i % len(cycle)]
        out.append((name, seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return out


def generate(seed: int, count: int, profile: Profile = "ci", categories: list[str] | None = None) -> list[Case]:
    cases = []
    for _i, (name, k) in enumerate(schedule(count, categories)):
        gen = CATEGORIES[name][0]
        rng = random.Random(f"{seed}:{name}:{k}")
        cases.append(gen(Builder(f"{name}-{k:04d}", name, ""), rng, k, profile))
    return cases
