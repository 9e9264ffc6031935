"""What the router itself observes of each model's speed: every looper sub-call's time to first token,
time per output token, whole-call latency and failures (fed from ``record.upstream_call``), kept as
EWMAs and a short window of recent samples (for percentiles). Per process; no prompt data.

Routed requests are not observed: in the shipped Envoy config the router never sees their responses.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field

ALPHA = 0.3  # weight of the newest sample in each EWMA
WINDOW = 64  # samples kept per metric for percentiles
METRICS = ("ttft", "tpot", "latency")


@dataclass(slots=True)
class ModelStats:
    ewma: dict[str, float] = field(default_factory=dict)  # seconds
    windows: dict[str, deque[float]] = field(default_factory=lambda: {m: deque(maxlen=WINDOW) for m in METRICS})
    samples: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))
    error_rate: float = 0.0  # EWMA of failed calls (1) vs answered ones (0)
    calls: int = 0

    def add(self, metric: str, value: float) -> None:
        old = self.ewma.get(metric)
        self.ewma[metric] = value if old is None else old + ALPHA * (value - old)
        self.windows[metric].append(value)
        self.samples[metric] += 1

    def percentile(self, metric: str, p: int) -> float | None:
        values = sorted(self.windows[metric])
        if not values:
            return None
        k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))  # nearest rank
        return values[k]


class Observations:
    """Model name → its stats. Written from the event loop (and, in tests, from threads): a lock keeps
    the small updates whole."""

    def __init__(self) -> None:
        self._stats: dict[str, ModelStats] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, outcome: str, seconds: float, first_token_s: float | None, completion_tokens: int) -> None:
        if outcome == "cancelled":
            return  # a straggler the looper no longer needed says nothing about the model
        with self._lock:
            stats = self._stats.setdefault(model, ModelStats())
            stats.calls += 1
            ok = outcome == "ok"
            stats.error_rate += ALPHA * ((0.0 if ok else 1.0) - stats.error_rate)
            if not ok:
                return
            stats.add("latency", seconds)
            if first_token_s is not None:
                stats.add("ttft", first_token_s)
                if completion_tokens > 1:
                    stats.add("tpot", max(0.0, seconds - first_token_s) / (completion_tokens - 1))
            elif completion_tokens > 0:
                # A whole (non-streamed) answer: time per output token, prefill included.
                stats.add("tpot", seconds / completion_tokens)

    def get(self, model: str) -> ModelStats | None:
        return self._stats.get(model)

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()


OBSERVED = Observations()
