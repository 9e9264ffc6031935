"""A vLLM Semantic Router v0.3 config, as the reference ships it, served by the real Envoy + router in
front of simulated vLLM backends and driven with the openai client."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from router.local import free_port
from tests.compat.harness import REFERENCE
from tests.integration.harness import clear_sim_requests, client, sim_requests, stack_on_free_ports

pytestmark = pytest.mark.envoy

SOURCE = REFERENCE / "e2e" / "config" / "config.multi-endpoint.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The reference's multi-endpoint config on free ports, plus a Qwen3 reasoning family and a LoRA
    on the dev model (its own shapes, from config/config.yaml), still in the v0.3 layout."""
    tmp: Path = tmp_path_factory.mktemp("vsr")
    doc = copy.deepcopy(yaml.safe_load(SOURCE.read_text()))
    doc["providers"]["defaults"]["reasoning_families"] = {
        "qwen3": {"type": "chat_template_kwargs", "parameter": "enable_thinking"}
    }
    specs = []
    for model in doc["providers"]["models"]:
        port = free_port()
        ref = model["backend_refs"][0]
        ref["endpoint"] = f"127.0.0.1:{port}"
        model["reasoning_family"] = "qwen3"
        specs.append(
            {
                "name": f"{model['name']}_{ref['name']}",
                "port": port,
                "models": [model["external_model_ids"]["vllm"], "code-expert"],
            }
        )
    doc["routing"]["modelCards"][0]["loras"] = [{"name": "code-expert"}]
    doc["routing"]["decisions"][0]["modelRefs"][0] |= {"use_reasoning": True, "lora_name": "code-expert"}
    path = tmp / "vsr.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    s = stack_on_free_ports(path, specs, tmp)
    s.start()
    yield s
    s.stop()


def _chat(stack, prompt):
    return client(stack).chat.completions.with_raw_response.create(model="MoM", messages=[{"role": "user", "content": prompt}])


def test_keyword_decision_routes_with_its_lora_and_thinking_on(stack):
    clear_sim_requests(stack)
    resp = _chat(stack, "Please debug this python function for me")
    assert resp.headers["x-vsr-selected-decision"] == "code_to_dev"
    assert resp.headers["x-vsr-selected-model"] == "qwen14b-dev"
    [seen] = sim_requests(stack, "qwen14b-dev_vllm-14b-dev")
    body = seen["body"]
    assert body["model"] == "code-expert" and body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["messages"][0]["role"] == "system" and "senior software engineer" in body["messages"][0]["content"]
    assert resp.parse().choices[0].message.content


def test_other_decision_gets_its_served_id_and_thinking_off(stack):
    clear_sim_requests(stack)
    resp = _chat(stack, "Hello! Tell me about the Eiffel tower")
    assert resp.headers["x-vsr-selected-decision"] == "general_to_prod"
    [seen] = sim_requests(stack, "qwen14b-prod_vllm-14b-prod")
    assert seen["body"]["model"] == "Qwen/Qwen2.5-14B-Instruct"
    assert seen["body"]["chat_template_kwargs"] == {"enable_thinking": False}  # omitted use_reasoning: off, said so
