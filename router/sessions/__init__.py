"""Session continuity: a conversation keeps the model an affinity decision chose for its earlier turns.
The key comes from a header, the OpenAI ``metadata`` / ``user`` fields or a hash of the conversation's
first turns; the store is in-process (TTL + LRU) or Redis (several replicas)."""
