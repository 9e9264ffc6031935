"""State several router replicas share (session affinity, tenant token windows): the Redis link every
such store uses, with short timeouts and a breaker so that Redis being down never blocks routing."""
