"""What vLLM Semantic Router has and fusion-router does not: one catalogue, by the reference's own
names, with a short reason each. Both readers (the router's layout and vLLM-SR's v0.3 layout) refuse
these by name with "not supported" instead of a bare "unknown key", so a user moving a config over
learns which feature is missing rather than suspecting a typo.
"""

from __future__ import annotations

# routing.signals.<section> → why it is not here
UNSUPPORTED_SIGNAL_SECTIONS: dict[str, str] = {
    "fact_check": "needs the fact-check classifier model",
    "user_feedbacks": "needs the user-feedback classifier model",
    "reasks": "re-ask detection across turns",
    "preferences": "preference (contrastive) classification",
    "structure": "prompt-structure features (counts, densities, sequences)",
    "modality": "modality detection (text vs image generation)",
    "role_bindings": "role bindings need the authz integration",
    "kb": "knowledge-base signals need the reference's KB embeddings",
    "conversation": "conversation-shape features (turn, tool-call and message counts)",
    "events": "structured event extraction",
    "metadata": "request-metadata predicates",
    "classifiers": "external LLM / custom-model classifier signals",
}

# rule leaf ``type`` → why it is not here (the leaf types of the sections above, plus projections)
UNSUPPORTED_LEAF_TYPES: dict[str, str] = {
    "fact_check": UNSUPPORTED_SIGNAL_SECTIONS["fact_check"],
    "user_feedback": UNSUPPORTED_SIGNAL_SECTIONS["user_feedbacks"],
    "reask": UNSUPPORTED_SIGNAL_SECTIONS["reasks"],
    "preference": UNSUPPORTED_SIGNAL_SECTIONS["preferences"],
    "structure": UNSUPPORTED_SIGNAL_SECTIONS["structure"],
    "modality": UNSUPPORTED_SIGNAL_SECTIONS["modality"],
    "authz": UNSUPPORTED_SIGNAL_SECTIONS["role_bindings"],
    "kb": UNSUPPORTED_SIGNAL_SECTIONS["kb"],
    "conversation": UNSUPPORTED_SIGNAL_SECTIONS["conversation"],
    "event": UNSUPPORTED_SIGNAL_SECTIONS["events"],
    "metadata": UNSUPPORTED_SIGNAL_SECTIONS["metadata"],
    "classifier": UNSUPPORTED_SIGNAL_SECTIONS["classifiers"],
    "projection": "routing.projections (derived scores and partitions)",
}

# decision plugin ``type`` → why it is not here
UNSUPPORTED_PLUGINS: dict[str, str] = {
    "response_cache": "response (semantic) caching",
    "semantic-cache": "response (semantic) caching",
    "semantic_cache": "response (semantic) caching",
    "response-cache": "response (semantic) caching",
    "router_replay": "request/response capture for replay",
    "memory": "agentic memory",
    "rag": "retrieval-augmented generation",
    "tools": "tool filtering",
    "tool_selection": "semantic tool selection",
    "hallucination": "hallucination detection on responses",
    "response_jailbreak": "jailbreak detection on responses",
    "fast_response": "canned fast responses",
    "request_params": "request-parameter policing",
    "image_gen": "image generation",
    "context_compression": "context compression",
}

# decision ``algorithm.type`` → why it is not here (the router's own are the looper registry's + static)
UNSUPPORTED_ALGORITHMS: dict[str, str] = {
    "ratings": "the ratings looper",
    "workflows": "the workflows (Router Flow) looper",
    "router_dc": "a learned selection algorithm (dual-contrastive)",
    "automix": "a learned selection algorithm",
    "hybrid": "a learned selection algorithm",
    "knn": "a learned selection algorithm (trained model files)",
    "kmeans": "a learned selection algorithm (trained model files)",
    "svm": "a learned selection algorithm (trained model files)",
    "mlp": "a learned selection algorithm (trained model files)",
    "elo": "a learned selection algorithm (feedback ratings)",
    "rl_driven": "a learned selection algorithm",
    "gmtrouter": "a learned selection algorithm",
    "multi_factor": "multi-factor selection from live quality, latency, cost and load",
    "prompt": "LLM-prompted model selection",
    "session_aware": "session-aware selection as an algorithm; set session_affinity: true on a routing decision instead",
}


def not_supported(feature: str, why: str, where: str) -> str:
    """The one wording every refusal uses: ``where: <feature> is not supported by fusion-router (why)``."""
    return f"{where}: {feature} is not supported by fusion-router ({why})"
