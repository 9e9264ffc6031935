"""Self-consistency's clustering on fixed similarities, the entailment veto and the exact-text fallback;
the adaptive-Fusion gate scored by self-consistency; debate's convergence stop by entailment (a fake
classifier runtime decides the verdicts), in-process against the simulator."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

import router.config  # noqa: F401 - the config package loads the looper registry in its usual order
from router.looper.self_consistency import cluster, text_similarity, winner


def test_similar_answers_share_a_cluster_and_the_largest_wins():
    sim = np.array([[1, 0.9, 0.2, 0.88], [0.9, 1, 0.1, 0.95], [0.2, 0.1, 1, 0.3], [0.88, 0.95, 0.3, 1]], dtype=np.float32)
    clusters = cluster(sim, 0.85)
    assert clusters == [[0, 1, 3], [2]]
    c, i = winner(clusters, sim)
    assert c == 0 and i == 1  # the most central member: highest similarity to the others


def test_the_entailment_veto_splits_similar_but_contradictory_answers():
    sim = np.full((3, 3), 0.95, dtype=np.float32)
    clusters = cluster(sim, 0.85, compatible=lambda a, b: {a, b} != {0, 2})
    assert clusters == [[0, 1], [2]]


def test_ties_go_to_the_earliest_cluster():
    sim = np.eye(2, dtype=np.float32)
    assert winner(cluster(sim, 0.85), sim) == (0, 0)


def test_without_embeddings_answers_cluster_by_normalised_text():
    sim = text_similarity(["Canberra.", "canberra", "Sydney"])
    assert cluster(sim, 1.0) == [[0, 1], [2]]


# --------------------------------------------------------------------------- adaptive Fusion gate by self-consistency


async def test_a_gate_scored_by_self_consistency_answers_alone_when_its_samples_agree():
    from router.app import App
    from router.config import parse_config
    from router.sim import SimBackendSpec, running_backends
    from tests.unit.test_loopers import ask

    specs = [
        SimBackendSpec(name="b-steady", models=["steady"], fixed_answer="Canberra."),
        SimBackendSpec(name="b-other", models=["other"]),
        SimBackendSpec(name="b-judge", models=["judge"], mode="judge_json"),
    ]
    async with running_backends(specs) as backends:
        ports = {b.name.removeprefix("b-"): b.port for b in backends}
        cfg = {
            "global": {"integrations": {"looper": {"timeout_seconds": 10}}},
            "backends": [{"name": f"b-{n}", "endpoint": f"http://127.0.0.1:{p}"} for n, p in ports.items()],
            "models": [{"name": n, "backend": f"b-{n}"} for n in ports],
            "default_model": "judge",
            "routing": {
                "decisions": [
                    {
                        "name": "gated",
                        "priority": 1,
                        "modelRefs": [{"model": "steady"}],
                        "algorithm": {
                            "type": "fusion",
                            "fusion": {
                                "model": "judge",
                                "analysis_models": ["steady", "other"],
                                "gate": {
                                    "model": "steady",
                                    "confidence_method": "self_consistency",
                                    "samples": 3,
                                    "threshold": 0.6,
                                },
                            },
                        },
                    }
                ]
            },
        }
        app = App.from_config(parse_config(cfg))  # no classifier runtime: samples cluster by their text
        _, action = await ask(app, "capital of Australia?")
        doc = orjson.loads(action.body)  # type: ignore[union-attr]
        gate = doc["fusion"]["gate"]
        assert doc["fusion"]["outcome"] == "gated" and gate["passed"] and gate["confidence"] == 1.0
        assert gate["method"] == "self_consistency" and doc["choices"][0]["message"]["content"] == "Canberra."
        steady = next(b for b in backends if b.name == "b-steady")
        assert len([r for r in steady.requests if r["path"] == "/v1/chat/completions"]) == 3  # k samples, no panel


# --------------------------------------------------------------------------- debate convergence by entailment


class FakeRuntime:
    """The classifier runtime's surface the looper encoders use: ``run_many`` and ``batcher``."""

    def __init__(self, label: str):
        self.label = label
        self.pairs: list[tuple[str, str]] = []

    async def batcher(self, name: str) -> None:
        return None

    async def run_many(self, name: str, items: list[tuple[str, str]]) -> list[object]:
        from classifiers import Classification

        self.pairs += items
        probs = {lab: (1.0 if lab == self.label else 0.0) for lab in ("entailment", "neutral", "contradiction")}
        return [Classification(probs=probs, label=self.label, score=1.0, truncated=False) for _ in items]


@pytest.mark.parametrize(("verdict", "rounds", "reason"), [("entailment", 1, "converged"), ("contradiction", 3, "max_rounds")])
async def test_debate_stops_when_every_pair_entails_and_not_when_they_contradict(verdict, rounds, reason):
    from router.app import App
    from router.config import parse_config
    from router.sim import SimBackendSpec, running_backends
    from tests.unit.test_loopers import ask

    specs = [
        SimBackendSpec(name="b-a", models=["a"], fixed_answer="Canberra is the capital."),
        SimBackendSpec(name="b-b", models=["b"], fixed_answer="The capital is Canberra."),
        SimBackendSpec(name="b-judge", models=["judge"]),
    ]
    async with running_backends(specs) as backends:
        ports = {b.name.removeprefix("b-"): b.port for b in backends}
        cfg = {
            "global": {"integrations": {"looper": {"timeout_seconds": 10}}},
            "backends": [{"name": f"b-{n}", "endpoint": f"http://127.0.0.1:{p}"} for n, p in ports.items()],
            "models": [{"name": n, "backend": f"b-{n}"} for n in ports],
            "default_model": "judge",
            "routing": {
                "decisions": [
                    {
                        "name": "argue",
                        "priority": 1,
                        "modelRefs": [{"model": "a"}, {"model": "b"}],
                        "algorithm": {
                            "type": "debate",
                            "debate": {"synthesis_model": "judge", "max_rounds": 2, "convergence": "entailment"},
                        },
                    }
                ]
            },
        }
        fake = FakeRuntime(verdict)
        app = App.from_config(parse_config(cfg), runtime=fake)
        _, action = await ask(app, "capital of Australia?")
        trace = orjson.loads(action.body)["debate"]  # type: ignore[union-attr]
    assert trace["stop_reason"] == reason and len(trace["rounds"]) == rounds
    assert trace["rounds"][0]["agreement"] == (1.0 if verdict == "entailment" else 0.0)
    assert len(fake.pairs) == 2 * rounds  # both directions, checked after every round
