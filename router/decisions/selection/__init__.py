"""Choosing one model among a routing decision's ``modelRefs``: one registry of selection algorithms
(``static``, ``weighted``, ``cost_aware``, ``latency_aware``), registered like the loopers."""
