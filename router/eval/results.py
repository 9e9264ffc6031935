"""The results file: one JSON line per (configuration, item), appended as each answer finishes.

That makes a run resumable and interruptible: a rerun reads the file, keeps the newest record of
each pair whose configuration fingerprint still matches, and only asks for what is missing (failed
calls are asked again). A line cut short by a hard kill is skipped with a warning.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

Status = Literal["scored", "unscored", "error"]
Grader = Literal["match", "judge", "pattern"]


class JudgeRecord(BaseModel):
    model: str
    met: dict[str, bool] | None = None
    error: str | None = None
    raw: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ResultRecord(BaseModel):
    configuration: str
    fingerprint: str
    item_id: str
    slice: str
    status: Status
    score: float | None = Field(None, description="in [0, 1]; None unless status is scored")
    grader: Grader | None = None
    content: str | None = None
    extracted: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    trace_key: str | None = None
    stage_usage: dict[str, dict[str, int]] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    judge: JudgeRecord | None = None
    pattern_score: float | None = None
    finished_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def key(self) -> tuple[str, str]:
        return self.configuration, self.item_id


class ResultStore:
    def __init__(self, path: Path):
        self.path = path
        self.warnings: list[str] = []

    def load(self) -> dict[tuple[str, str], ResultRecord]:
        """The newest record of every (configuration, item) pair in the file."""
        latest: dict[tuple[str, str], ResultRecord] = {}
        if not self.path.exists():
            return latest
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = ResultRecord.model_validate(json.loads(line))
                except (json.JSONDecodeError, ValidationError):
                    self.warnings.append(f"{self.path}:{number}: unreadable result line skipped")
                    continue
                latest[record.key] = record
        return latest

    def rewrite(self, records: Iterable[ResultRecord]) -> None:
        """Replace the file with these records (written beside it, then renamed over it)."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(record.model_dump_json() + "\n")
        tmp.replace(self.path)

    def append(self, record: ResultRecord) -> None:
        # One short line per finished answer, flushed at once: an interrupt loses nothing finished.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(record.model_dump_json() + "\n")
            f.flush()


Records = dict[tuple[str, str], ResultRecord]


def current(records: Records, fingerprints: dict[str, str]) -> Records:
    """Records that belong to the configurations as they are defined now."""
    return {k: r for k, r in records.items() if fingerprints.get(r.configuration) == r.fingerprint}


def warn(message: str) -> None:
    print(f"fusion-router eval: {message}", file=sys.stderr)
