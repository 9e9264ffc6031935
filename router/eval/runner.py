"""Runs every (configuration, item) pair that has no result yet, with bounded concurrency.

Each finished pair is appended to the results file at once, so an interrupt (Ctrl-C, a cancelled
task) keeps everything that finished and a rerun continues from there. A failing endpoint or a
judge that answers garbage is recorded for that item and the run goes on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import openai
import structlog

from router.eval.calls import CallFailed, chat, make_client
from router.eval.configs import EndpointSpec, EvalConfiguration, EvalSuite
from router.eval.dataset import Item
from router.eval.judge import grade
from router.eval.progress import Progress
from router.eval.results import JudgeRecord, ResultRecord, ResultStore, current
from router.eval.scoring import pattern_verdicts, rubric_score, score_closed

log = structlog.get_logger("router.eval")


@dataclass
class RunOutcome:
    planned: int
    reused: int
    finished: int = 0
    errors: int = 0
    unscored: int = 0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)


class Runner:
    def __init__(self, suite: EvalSuite, items: list[Item], store: ResultStore, *, progress: bool = True):
        self.suite, self.items, self.store = suite, items, store
        self.show_progress = progress
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
        self.fingerprints = {c.name: c.fingerprint(suite) for c in suite.configurations}

    def client(self, spec: EndpointSpec) -> openai.AsyncOpenAI:
        key = (self.suite.endpoint_for(spec), self.suite.api_key_for(spec))
        if key not in self._clients:
            self._clients[key] = make_client(key[0], key[1], self.suite.timeout_seconds)
        return self._clients[key]

    def pending(self) -> tuple[list[tuple[EvalConfiguration, Item]], int]:
        """Pairs still to run (item-major, so a partial run covers every configuration evenly) and
        how many finished pairs of this plan an earlier run left."""
        done = {k for k, r in current(self.store.load(), self.fingerprints).items() if r.status != "error"}
        todo = [(c, i) for i in self.items for c in self.suite.configurations if (c.name, i.id) not in done]
        planned = len(self.items) * len(self.suite.configurations)
        return todo, planned - len(todo)

    async def run(self) -> RunOutcome:
        # Keys are checked before any call, so a missing environment variable stops the run cleanly.
        for spec in [*self.suite.configurations, *([self.suite.judge] if self.suite.judge else [])]:
            self.client(spec)
        todo, reused = self.pending()
        outcome = RunOutcome(
            planned=len(self.items) * len(self.suite.configurations), reused=reused, warnings=list(self.store.warnings)
        )
        progress = Progress(len(todo), already=reused, enabled=self.show_progress)
        gate = asyncio.Semaphore(self.suite.concurrency)

        async def one(config: EvalConfiguration, item: Item) -> None:
            async with gate:
                try:
                    record = await self.evaluate(config, item)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # a bug for one item must not end the run
                    log.exception("eval_item_failed", configuration=config.name, item=item.id)
                    record = self._record(config, item, status="error", error=f"internal error: {type(exc).__name__}")
            self.store.append(record)
            outcome.finished += 1
            outcome.errors += record.status == "error"
            outcome.unscored += record.status == "unscored"
            progress.update(record.status)

        tasks = [asyncio.create_task(one(c, i)) for c, i in todo]
        try:
            await asyncio.gather(*tasks)
        except (asyncio.CancelledError, KeyboardInterrupt):
            outcome.interrupted = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            progress.close()
            for client in self._clients.values():
                await client.close()
        return outcome

    def _record(self, config: EvalConfiguration, item: Item, **fields: object) -> ResultRecord:
        return ResultRecord(
            configuration=config.name, fingerprint=self.fingerprints[config.name], item_id=item.id, slice=item.slice, **fields
        )

    async def evaluate(self, config: EvalConfiguration, item: Item) -> ResultRecord:
        messages = ([{"role": "system", "content": item.system}] if item.system else []) + [
            {"role": "user", "content": item.prompt}
        ]
        try:
            reply = await chat(
                self.client(config),
                model=config.model,
                messages=messages,
                max_tokens=config.max_tokens or self.suite.max_tokens,
                temperature=self.suite.temperature if config.temperature is None else config.temperature,
                extra_body=config.extra_body,
            )
        except CallFailed as exc:
            log.info("eval_call_failed", configuration=config.name, item=item.id, reason=exc.reason)
            return self._record(config, item, status="error", error=exc.reason, latency_ms=exc.latency_ms)
        record = self._record(
            config,
            item,
            status="scored",
            content=reply.content,
            finish_reason=reply.finish_reason,
            calls=reply.cost.calls,
            prompt_tokens=reply.cost.prompt_tokens,
            completion_tokens=reply.cost.completion_tokens,
            latency_ms=reply.latency_ms,
            trace_key=reply.cost.trace_key,
            stage_usage=reply.cost.stage_usage,
            headers=reply.headers,
        )
        if item.scorer != "rubric":
            closed = score_closed(item, reply.content)
            return record.model_copy(
                update={"score": 1.0 if closed.correct else 0.0, "grader": "match", "extracted": closed.extracted}
            )
        by_pattern = pattern_verdicts(item.rubric, reply.content)
        pattern_score = rubric_score(item.rubric, by_pattern) if by_pattern is not None else None
        judge = self.suite.judge
        if judge is None:
            if pattern_score is None:
                return record.model_copy(
                    update={
                        "status": "unscored",
                        "grader": "pattern",
                        "error": "no judge configured and some criteria have no pattern",
                    }
                )
            return record.model_copy(update={"score": pattern_score, "grader": "pattern", "pattern_score": pattern_score})
        verdict = await grade(
            self.client(judge),
            model=judge.model,
            item=item,
            answer=reply.content,
            max_tokens=judge.max_tokens,
            structured=judge.structured,
        )
        judged = JudgeRecord(
            model=judge.model,
            met=verdict.met,
            error=verdict.error,
            raw=verdict.raw,
            prompt_tokens=verdict.prompt_tokens,
            completion_tokens=verdict.completion_tokens,
        )
        update: dict[str, object] = {"grader": "judge", "judge": judged, "pattern_score": pattern_score}
        if verdict.met is None:  # a garbage verdict: unscored, never a zero
            update.update(status="unscored", error=verdict.error)
        else:
            update.update(score=rubric_score(item.rubric, verdict.met))
        return record.model_copy(update=update)
