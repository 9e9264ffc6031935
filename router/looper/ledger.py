"""What a looper run actually did: every call, its usage by stage, every failure with its reason, and
the time each stage took. The trace, the usage sum and the iteration count all come from here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from router.openai.types import Usage


@dataclass(frozen=True, slots=True)
class Failure:
    model: str
    stage: str
    reason: str  # typed: timeout, http_503, invalid_response, rate_limited, cancelled, ...
    error: str  # human-readable, secrets already redacted


@dataclass(slots=True)
class Ledger:
    started: float = field(default_factory=time.perf_counter)
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    stage_usage: dict[str, Usage] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # models that answered, in completion order

    def record(self, model: str, stage: str, usage: Usage) -> None:
        self.usage = self.usage + usage
        self.stage_usage[stage] = self.stage_usage.get(stage, Usage()) + usage
        self.answered.append(model)

    def fail(self, model: str, stage: str, reason: str, error: str) -> None:
        self.failures.append(Failure(model, stage, reason, error))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (its time accumulates when the stage runs more than once, e.g. ReMoM rounds)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_ms[name] = self.stage_ms.get(name, 0.0) + (time.perf_counter() - t0) * 1000

    @property
    def total_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
