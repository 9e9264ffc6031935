"""Hostile-input harness: a seeded corpus of bad requests sent through a real Envoy + router stack.

``corpus`` builds the cases, ``wire`` sends them byte for byte, ``invariants`` judges each answer,
``runner`` owns the stack (restarting it when a case kills the router) and ``upstream`` plays a
misbehaving model backend for Fusion. ``bench/fuzz.py`` (``make fuzz``) is the command line;
``test_fuzz.py`` runs the CI-sized corpus under pytest.
"""
