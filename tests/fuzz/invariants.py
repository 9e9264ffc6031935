"""What every answer must satisfy, whatever was sent. Each check returns violations, never raises.

Invariant names are stable: reports group by them and docs/reliability.md lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.fuzz import hostile as T
from tests.fuzz.corpus import Case
from tests.fuzz.wire import Reply, sse_events

INVARIANTS: dict[str, str] = {
    "status": "the HTTP status is one this input may get (per case, from the contract)",
    "no_500": "never a 500 (an unexpected router error, or Envoy's reply when the router failed)",
    "no_response": "some HTTP response comes back (no reset, no hang past the case timeout)",
    "error_shape": 'every non-2xx body is JSON {"error": {"message", "type", "code"}} with content-type application/json',
    "ok_shape": "a 200 is a chat.completion (JSON) or an SSE stream that ends with [DONE] or an error event "
    "(an error event only where the case also allows an error status)",
    "jailbreak_forwarded": "a jailbreak phrase never reaches a model (simulated backends' request logs)",
    "card_forwarded": "a Luhn-valid card number never reaches a model",
    "email_forwarded": "an email address never reaches a model unmasked (the default policy masks contact details)",
    "forged_echo": "client-sent x-vsr-* values never come back (headers or body)",
    "debug_exposed": "a client's x-vsr-debug alone never reveals x-vsr-matched-signals",
    "secret_echo": "a backend API key never appears in what the client gets",
    "api_key_sent": "every call to a backend configured with an API key carries it (Fusion sub-calls included)",
    "router_alive": "the router process is still running after the case",
    "serves_after": "a normal request is answered 200 after the case",
    "rss_bound": "router RSS stays within the baseline plus the allowed growth",
}


@dataclass
class Violation:
    case_id: str
    category: str
    variant: str
    invariant: str
    detail: str
    status: int
    body: str  # the first bytes of what came back

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _snippet(data: bytes, n: int = 300) -> str:
    text = data[:n].decode("utf-8", "replace")
    return text + (f"...({len(data)} bytes)" if len(data) > n else "")


def check_reply(case: Case, reply: Reply, received: list[dict[str, Any]], *, secrets: tuple[str, ...] = ()) -> list[Violation]:
    """Invariants that need only the case, the reply and what the backends received."""
    out: list[Violation] = []

    def bad(invariant: str, detail: str) -> None:
        out.append(Violation(case.id, case.category, case.variant, invariant, detail, reply.status, _snippet(reply.body)))

    status = reply.status
    if status == 0:
        bad("no_response", reply.error or "connection closed without an HTTP response")
    else:
        if status not in case.expect:
            bad("status", f"got {status}, expected one of {sorted(case.expect)}")
        if status == 500:
            bad("no_500", "HTTP 500")
        if status >= 300 and case.method != "HEAD":
            problem = error_shape_problem(reply)
            if problem:
                bad("error_shape", problem)
        if status == 200 and case.method == "POST" and case.expect & {200}:
            # Where only success is right, a stream that reports an error is no success either.
            problem = ok_shape_problem(reply, error_event_ok=bool(case.expect - {200}))
            if problem:
                bad("ok_shape", problem)

    for kind, marker in case.leaks:
        hits = [r for r in received if T.found_in(marker, r.get("body"))]
        if hits:
            where = sorted({_describe_call(r) for r in hits})
            bad(f"{kind}_forwarded", f"{marker!r} reached {len(hits)} backend call(s): {', '.join(where)[:200]}")

    if case.forged:
        echoed = [f"{k}: {v}" for k, v in reply.headers if any(f in v for f in case.forged)]
        in_body = [f for f in case.forged if f.encode() in reply.body]
        if echoed or in_body:
            bad("forged_echo", "; ".join(echoed + [f"body contains {f}" for f in in_body])[:300])

    if case.debug and reply.header("x-vsr-matched-signals") is not None:
        bad("debug_exposed", f"x-vsr-matched-signals: {reply.header('x-vsr-matched-signals')}")

    for secret in secrets:
        if secret.encode() in reply.body or any(secret in v for _, v in reply.headers):
            bad("secret_echo", "the backend API key is in the response")
    return out


def _describe_call(record: dict[str, Any]) -> str:
    body = record.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    return f"{record.get('backend', '?')}:{model}"


def error_shape_problem(reply: Reply) -> str | None:
    ctype = (reply.header("content-type") or "").split(";")[0].strip().lower()
    if not reply.body:
        return f"empty body (content-type {ctype or 'none'})"
    try:
        doc = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        return f"body is not JSON (content-type {ctype or 'none'})"
    if ctype != "application/json":
        return f"JSON body but content-type {ctype or 'none'}"
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return "no `error` object"
    missing = [k for k in ("message", "type", "code") if not isinstance(err.get(k), str) or not err.get(k)]
    if missing:
        return f"error.{'/'.join(missing)} missing or not a non-empty string"
    return None


def ok_shape_problem(reply: Reply, error_event_ok: bool = True) -> str | None:
    ctype = (reply.header("content-type") or "").split(";")[0].strip().lower()
    if ctype == "text/event-stream":
        if reply.error:
            return f"stream broke off: {reply.error}"
        events = sse_events(reply.body)
        if not events:
            return "empty event stream"
        for data in events:
            if data == b"[DONE]":
                continue
            try:
                doc = json.loads(data)
            except ValueError:
                return f"an SSE event is not JSON: {data[:80]!r}"
            if isinstance(doc, dict) and "error" in doc:
                if error_event_ok:
                    return None  # a stream may end with an error event
                return f"the stream reports an error: {json.dumps(doc.get('error'))[:160]}"
        if events[-1] != b"[DONE]":
            return "stream ends without [DONE] and without an error event"
        return None
    # A streamed request may still get one JSON completion when it was answered in one piece.
    try:
        doc = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        return f"200 body is neither JSON nor SSE (content-type {ctype or 'none'})"
    if (
        not isinstance(doc, dict)
        or doc.get("object") not in ("chat.completion", "list", "model")
        or (doc.get("object") == "chat.completion" and not isinstance(doc.get("choices"), list))
    ):
        return "200 body is not a chat.completion"
    return None
