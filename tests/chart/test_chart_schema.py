"""values.schema.json (and the chart's own checks) reject bad values with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .helpers import helm_template

BAD = [
    # (values, words the error must contain)
    ({"replicaCount": "three"}, ["replicaCount", "Invalid type", "Expected: integer"]),
    ({"backends": [{"name": "Bad_Name!", "endpoint": "http://x.llm.svc:8000"}]}, ["backends.0.name", "Does not match pattern"]),
    ({"backends": [{"name": "ok", "endpoint": "ftp://x"}]}, ["backends.0.endpoint", "Does not match pattern"]),
    ({"backends": [{"name": "ok"}]}, ["backends.0", "endpoint is required"]),
    ({"envoy": {"listenerPort": 70000}}, ["envoy.listenerPort", "less than or equal to 65535"]),
    ({"router": {"grpcPort": 0}}, ["router.grpcPort", "greater than or equal to 1"]),
    ({"router": {"logFormat": "xml"}}, ["router.logFormat", "json", "console"]),
    ({"envoy": {"messageTimeout": "10m"}}, ["envoy.messageTimeout", "Does not match pattern"]),
    ({"image": {"pullPolicy": "Sometimes"}}, ["image.pullPolicy", "must be one of"]),
    ({"apiKeys": [{"env": "OPENAI_API_KEY", "value": "sk-live-123"}]}, ["apiKeys.0", "Additional property value is not allowed"]),
    ({"replicas": 3}, ["Additional property replicas is not allowed"]),
    ({"gpu": {"enabled": "yes"}}, ["gpu.enabled", "Expected: boolean"]),
    ({"drain": {"timeoutSeconds": -1}}, ["drain.timeoutSeconds", "greater than or equal to 0"]),
    ({"service": {"type": "Ingress"}}, ["service.type", "must be one of"]),
    # checks in templates/_helpers.tpl (beyond JSON schema)
    (
        {"backends": [{"name": "a", "endpoint": "http://a:1"}, {"name": "a", "endpoint": "http://b:1"}]},
        ["backends[1].name", "duplicate backend name"],
    ),
    ({"routerConfig": {"backends": [], "models": []}}, ["routerConfig.backends", "do not set it"]),
    ({"backends": [{"name": "a", "endpoint": "http://a:1", "apiKeyEnv": "A_KEY"}]}, ["backends[0].apiKeyEnv", "A_KEY"]),
    ({"envoy": {"healthPort": 9190}}, ["must differ"]),
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, ["maxReplicas must be >= "]),
]


@pytest.mark.parametrize("values,words", BAD, ids=[next(iter(v)) + f"-{i}" for i, (v, _) in enumerate(BAD)])
def test_bad_values_are_rejected(tmp_path: Path, values, words):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(values))
    proc = helm_template("-f", str(f))
    assert proc.returncode != 0, f"helm accepted {values}"
    for word in words:
        assert word in proc.stderr, f"{word!r} not in:\n{proc.stderr}"


def test_good_values_pass(tmp_path: Path):
    f = tmp_path / "good.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "backends": [{"name": "a-1.b", "endpoint": "https://api.example.com/v1", "apiKeyEnv": "A_KEY"}],
                "apiKeys": [{"env": "A_KEY", "secretName": "keys", "secretKey": "a"}],
                "routerConfig": {"models": [{"name": "m", "backend": "a-1.b"}]},
                "envoy": {"messageTimeout": "0.5s"},
                "podDisruptionBudget": {"maxUnavailable": "25%"},
            }
        )
    )
    proc = helm_template("-f", str(f))
    assert proc.returncode == 0, proc.stderr
