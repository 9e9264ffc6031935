"""An identifier-kind PII span needs a digit: the token classifier flags long letter runs (a
200-character "ddd..." placeholder in a tool schema) as DRIVERS_LICENSE, and a request must not be
refused for that; real licence, passport and account numbers are still refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import load_config
from router.decisions.policy import compile_policy
from router.signals.base import MessageText, SignalContext
from router.signals.pii import PIISignal
from router.signals.runtime import build_runtime

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def secrets():
    if not (ROOT / "models" / "pii" / "metadata.json").is_file():
        pytest.skip("models/pii not built: run `make models`")
    config = load_config(ROOT / "config" / "default.yaml")
    runtime = build_runtime(config)
    policy = compile_policy(config, runtime=runtime)
    await policy.start()
    sig = next(s for s in policy.signals.values() if isinstance(s, PIISignal) and s.name == "pii_secrets")
    yield sig
    await runtime.close()


@pytest.mark.parametrize(
    ("role", "text", "types"),
    [
        ("tools", "big " + " ".join(["d" * 200] * 40), []),
        ("user", "Use the field " + "d" * 200 + " here", []),
        ("user", "My driver's license number is D123-4567-8901, please update it.", ["DRIVERS_LICENSE"]),
        ("user", "My passport number is X12345678.", ["PASSPORT"]),
    ],
)
async def test_identifier_spans_need_a_digit(secrets: PIISignal, role: str, text: str, types: list[str]) -> None:
    res = await secrets.score(SignalContext((MessageText("user", "What is the weather?"), MessageText(role, text))))
    assert res.detail["types"] == types and res.matched == bool(types)
