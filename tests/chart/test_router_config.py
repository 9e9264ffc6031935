"""The router config each rendered ConfigMap carries is valid for the router (router.config.loader).

Skipped while the router package cannot be imported; scripts/chart_test.sh also runs the CLI
(`fusion-router check-config`) on the same files once it exists.
"""

from __future__ import annotations

import pytest

from .helpers import EXAMPLES

loader = pytest.importorskip("router.config.loader", reason="router.config.loader not importable yet")


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_rendered_router_config_is_valid(rendered, tmp_path, example):
    path = tmp_path / "config.yaml"
    path.write_text(rendered(example).router_config_yaml)
    try:
        cfg = loader.load_config(path)
    except loader.ConfigError as exc:
        pytest.fail(f"{example}: router config rejected:\n{exc}")
    assert [b.name for b in cfg.backends]
