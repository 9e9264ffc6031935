"""The one table of looper algorithms: ``algorithm.type`` → everything the router needs to know.

Adding an algorithm is one module (its settings, request plugin, params resolver, trace and
implementation, ending in a ``SPEC``) plus one line in ``ALGORITHMS`` below. The config schema builds
``routing.decisions[].algorithm`` and ``global.integrations.looper.<name>`` from this table; the
pipeline, the request plugins, the direct slugs, the trace key, headers and metrics read it too.
"""

from __future__ import annotations

from router.looper import confidence, debate, fusion, remom, self_consistency
from router.looper.spec import AlgorithmSpec

ALGORITHMS: dict[str, AlgorithmSpec] = {
    s.name: s for s in (fusion.SPEC, confidence.SPEC, remom.SPEC, self_consistency.SPEC, debate.SPEC)
}


def spec_for_plugin(plugin_id: str) -> AlgorithmSpec | None:
    return next((s for s in ALGORITHMS.values() if plugin_id in s.plugin_ids), None)
