"""The one table of selection algorithms: ``algorithm.type`` of a routing decision → how it picks one
model among the decision's ``modelRefs``.

Adding an algorithm is one module ending in a ``SPEC`` plus one line below; the config schema's
``algorithm`` union, the loader's checks, the pipeline and ``classify`` read this table.
"""

from __future__ import annotations

from router.decisions.selection import cost_aware, latency_aware, static, weighted
from router.decisions.selection.spec import SelectionSpec

SELECTIONS: dict[str, SelectionSpec] = {s.name: s for s in (static.SPEC, weighted.SPEC, cost_aware.SPEC, latency_aware.SPEC)}
