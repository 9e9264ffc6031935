"""Fusion: a panel answers in parallel, a judge analyses agreement and gaps, one synthesis call answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from router.extproc import headers as H
from router.looper.analysis import parse_analysis
from router.looper.base import Looper, LooperRun, Outcome
from router.looper.client import CallResult, UpstreamError
from router.looper.templates import render
from router.observability import record
from router.openai.errors import OpenAIError
from router.openai.types import Usage

log = structlog.get_logger("router.fusion")

# Request fields that belong to the client's final answer only, or to the router.
_NOT_FOR_SUBCALLS = ("tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options", "plugins", "n",
                     "response_format", "functions", "function_call")


@dataclass(slots=True)
class Ledger:
    """What was actually called, for the trace, the usage sum and the iteration count."""

    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    responses: list[CallResult] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)
    analysis_status: str = "not_run"
    stage_usage: dict[str, Usage] = field(default_factory=dict)

    def add(self, result: CallResult, stage: str) -> None:
        self.usage = self.usage + result.usage
        self.stage_usage[stage] = self.stage_usage.get(stage, Usage()) + result.usage


def text_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as plain text turns: panel and judge calls get no tools, but must still see
    earlier tool calls and their results for multi-turn agent loops."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("text"))
        content = content or ""
        if role == "assistant" and msg.get("tool_calls"):
            calls = "; ".join(
                f"{(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments')})" for c in msg["tool_calls"]
            )
            out.append({"role": "assistant", "content": (content + "\n" if content else "") + f"[called tools: {calls}]"})
        elif role in ("tool", "function"):
            out.append({"role": "user", "content": f"[tool result {msg.get('tool_call_id') or msg.get('name') or ''}]: {content}"})
        elif role == "developer":
            out.append({"role": "system", "content": content})
        else:
            out.append({"role": role, "content": content})
    return out


def original_text(messages: list[dict[str, Any]]) -> str:
    lines = []
    for msg in text_history(messages):
        lines.append(f"{msg['role']}: {msg['content']}")
    return "\n".join(lines)


class Fusion(Looper):
    name = "fusion"

    async def run(self, run: LooperRun) -> Outcome:
        p = run.params
        ledger = Ledger()
        started = time.perf_counter()
        base = {k: v for k, v in run.raw.items() if k not in _NOT_FOR_SUBCALLS}
        base["messages"] = text_history(run.raw.get("messages") or [])
        if p.max_completion_tokens is not None:
            base.pop("max_tokens", None)
            base["max_completion_tokens"] = p.max_completion_tokens
        if p.temperature is not None:
            base["temperature"] = p.temperature

        try:
            await run.say(f"fusion: panel of {len(p.panel)} started ({', '.join(p.panel)})")
            await self._panel(run, base, ledger)
            t0 = time.perf_counter()
            original = original_text(run.raw.get("messages") or [])
            responses = "\n\n".join(f"[{r.model}]\n{r.content}" for r in ledger.responses)
            await run.say(f"fusion: panel done ({len(ledger.responses)} answered, {len(ledger.failed)} failed); judge {p.judge} analysing")
            analysis_text, analysis_status, analysis_obj = await self._judge(run, base, original, responses, ledger)
            ledger.analysis_status = analysis_status
            ledger.stage_ms["judge"] = (time.perf_counter() - t0) * 1000
            await run.say(f"fusion: analysis {analysis_status}; synthesis by {p.judge}")
            t0 = time.perf_counter()
            final = await self._synthesize(run, original, responses, analysis_text, ledger)
            ledger.stage_ms["synthesis"] = (time.perf_counter() - t0) * 1000
        except _Failure as failure:
            ledger.stage_ms["total"] = (time.perf_counter() - started) * 1000
            trace = self._trace(run, ledger, None, ledger.analysis_status, None)
            trace["error"] = {"stage": failure.stage, "reason": failure.reason, "message": failure.message}
            err = OpenAIError(failure.status, failure.message, failure.reason, type="upstream_error", extra={"fusion": trace})
            log.warning("fusion_failed", request_id=run.request_id, decision=run.decision, stage=failure.stage, reason=failure.reason)
            record.fusion_done(run.decision, trace, failure.reason)
            return Outcome(None, [], "error", ledger.usage, trace, self._headers(run, ledger, failure.reason), err)

        ledger.stage_ms["total"] = (time.perf_counter() - started) * 1000
        trace = self._trace(run, ledger, analysis_obj, analysis_status, analysis_text)
        record.fusion_done(run.decision, trace, "ok")
        log.info(
            "fusion_done",
            request_id=run.request_id,
            decision=run.decision,
            judge=p.judge,
            panel_ok=len(ledger.responses),
            panel_failed=len(ledger.failed),
            analysis=analysis_status,
            iterations=ledger.calls,
            latency_ms=round(ledger.stage_ms["total"], 3),
        )
        finish = "tool_calls" if final.tool_calls else (final.finish_reason or "stop")
        return Outcome(final.content or (None if final.tool_calls else ""), final.tool_calls, finish, ledger.usage, trace,
                       self._headers(run, ledger, analysis_status))

    async def _panel(self, run: LooperRun, base: dict[str, Any], ledger: Ledger) -> None:
        p = run.params
        gate = asyncio.Semaphore(p.max_concurrent)
        started = time.perf_counter()

        async def one(name: str) -> CallResult:
            async with gate:
                ledger.calls += 1
                return await run.call(name, base, p.panel_timeout)

        tasks = {asyncio.create_task(one(name)): name for name in p.panel}
        try:
            pending = set(tasks)
            deadline = started + p.panel_timeout
            while pending:
                done, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - time.perf_counter()), return_when=asyncio.FIRST_COMPLETED)
                if not done:  # the stage budget ran out: whoever has not answered failed
                    for task in pending:
                        ledger.failed.append({"model": tasks[task], "reason": "timeout", "error": f"no answer within the panel budget of {p.panel_timeout:g}s"})
                    break
                for task in done:
                    name = tasks[task]
                    exc = task.exception()
                    if exc is None:
                        result = task.result()
                        ledger.add(result, "panel")
                        ledger.responses.append(result)
                        await run.say(f"fusion: {name} answered in {result.latency_ms:.0f} ms")
                        continue
                    reason = exc.reason if isinstance(exc, UpstreamError) else "internal_error"
                    ledger.failed.append({"model": name, "reason": reason, "error": str(exc)})
                    await run.say(f"fusion: {name} failed ({reason})")
                    if p.on_error == "fail":
                        raise _Failure("panel", 502, "panel_model_failed", f"Fusion panel model {name} failed ({reason}): {exc}")
        finally:
            for task in tasks:
                task.cancel()
            ledger.stage_ms["panel"] = (time.perf_counter() - started) * 1000
        # Keep the configured panel order in the trace, not the finishing order.
        order = {name: i for i, name in enumerate(p.panel)}
        ledger.responses.sort(key=lambda r: order[r.model])
        if not ledger.responses:
            raise _Failure("panel", 504 if all(f["reason"] == "timeout" for f in ledger.failed) else 502, "all_panels_failed",
                           "Every Fusion panel model failed: " + "; ".join(f"{f['model']}: {f['reason']}" for f in ledger.failed))
        if len(ledger.responses) < p.min_successful:
            raise _Failure("panel", 502, "quorum_not_met",
                           f"Only {len(ledger.responses)} of {len(p.panel)} panel models answered; the quorum is {p.min_successful}.")

    async def _judge(self, run: LooperRun, base: dict[str, Any], original: str, responses: str, ledger: Ledger) -> tuple[str, str, Any]:
        p = run.params
        prompt = render(p.analysis_template, original=original, responses=responses)
        body = {**base, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
        ledger.calls += 1
        try:
            result = await run.call(p.judge, body, p.judge_timeout)
        except UpstreamError as exc:
            ledger.analysis_status = "judge_upstream_error"
            raise _Failure("judge", 504 if exc.reason == "timeout" else 502, "judge_upstream_error",
                           f"The Fusion judge {p.judge} failed ({exc.reason}): {exc}") from None
        ledger.add(result, "judge")
        parsed = parse_analysis(result.content)
        if parsed.analysis is not None:
            text = orjson.dumps(parsed.analysis.model_dump(), option=orjson.OPT_INDENT_2).decode()
            return text, "ok", parsed.analysis.model_dump()
        # Never hide a parse failure, and never drop the judge's words: synthesis still gets them.
        return parsed.raw or "(the judge returned no analysis)", parsed.status, None

    async def _synthesize(self, run: LooperRun, original: str, responses: str, analysis: str, ledger: Ledger) -> CallResult:
        p = run.params
        instructions = render(p.synthesis_template, original=original, responses=responses, analysis=analysis)
        raw = run.raw
        body = {k: v for k, v in raw.items() if k not in ("stream", "stream_options", "plugins", "n")}
        # The final call alone sees the client's tools, with the history in its native form.
        body["messages"] = [{"role": "system", "content": instructions}, *(raw.get("messages") or [])]
        if p.max_completion_tokens is not None:
            body.pop("max_tokens", None)
            body["max_completion_tokens"] = p.max_completion_tokens
        if p.temperature is not None:
            body["temperature"] = p.temperature
        ledger.calls += 1
        try:
            result = await run.call(p.judge, body, p.synthesis_timeout, stream=run.on_delta is not None)
        except UpstreamError as exc:
            raise _Failure("synthesis", 504 if exc.reason == "timeout" else 502, "synthesis_failed",
                           f"The Fusion synthesis call to {p.judge} failed ({exc.reason}): {exc}") from None
        ledger.add(result, "synthesis")
        return result

    def _trace(self, run: LooperRun, ledger: Ledger, analysis: Any, status: str, analysis_text: str | None) -> dict[str, Any]:
        p = run.params
        trace: dict[str, Any] = {
            "decision": run.decision,
            "judge_model": p.judge,
            "analysis_models": list(p.panel),
            "answered_models": [r.model for r in ledger.responses],
            "failed_models": ledger.failed,
            "iterations": ledger.calls,
            "prompt_version": p.prompt_version,
            "analysis_status": status,
            "latency_ms": {k: round(v, 3) for k, v in ledger.stage_ms.items()},
            "usage": {k: v.model_dump() for k, v in ledger.stage_usage.items()},
        }
        if p.include_analysis:
            trace["analysis"] = analysis
            if analysis is None and analysis_text is not None:
                trace["analysis_raw"] = analysis_text
        if p.include_intermediate_responses:
            trace["responses"] = [
                {"model": r.model, "content": r.content, "latency_ms": round(r.latency_ms, 3), "usage": r.usage.model_dump()}
                for r in ledger.responses
            ]
        return trace

    def _headers(self, run: LooperRun, ledger: Ledger, status: str) -> dict[str, str]:
        if not run.params.trace_headers:
            return {}
        ms = ledger.stage_ms
        return {
            H.FUSION_PANEL: ",".join(r.model for r in ledger.responses),
            H.FUSION_JUDGE: run.params.judge,
            H.FUSION_FAILED: ",".join(f"{f['model']}={f['reason']}" for f in ledger.failed),
            H.FUSION_ITERATIONS: str(ledger.calls),
            H.FUSION_ANALYSIS: status,
            H.FUSION_LATENCY: ",".join(f"{k}={v:.1f}" for k, v in ms.items()),
        }


class _Failure(Exception):
    def __init__(self, stage: str, status: int, reason: str, message: str):
        super().__init__(message)
        self.stage, self.status, self.reason, self.message = stage, status, reason, message
