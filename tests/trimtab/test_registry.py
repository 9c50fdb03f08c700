"""The model registry: atomic, immutable, checksummed versions; pointers that change atomically and
announce themselves; rollback to the version current replaced."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from transformers import LlamaConfig, LlamaForCausalLM

from tests.conftest import config_with, free_port
from trimtab.app.stack import down, up
from trimtab.config import TrimtabConfig
from trimtab.records import redis_client
from trimtab.registry import PointerError, PointerStore, Registry, RegistryError
from trimtab.registry.commands import with_pointers


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-model")
    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_publish_copies_a_sealed_version_with_checksums(tmp_path: Path, hf_dir: Path) -> None:
    registry = Registry(tmp_path / "registry")
    manifest = registry.publish(hf_dir, parent=None, algorithm="import", metrics={"reward": 0.5})
    directory = registry.path(manifest.id)
    assert manifest.kind == "full" and manifest.id.startswith("ver_")
    assert set(manifest.files) == {p.name for p in hf_dir.iterdir()}
    assert registry.get(manifest.id) == manifest and registry.verify(manifest.id) == []
    assert all(p.stat().st_mode & 0o222 == 0 for p in directory.iterdir())  # read-only: immutable
    assert [p.name for p in (tmp_path / "registry").iterdir()] == [manifest.id]  # no staging left behind


def test_ids_are_never_reused_and_listing_is_oldest_first(tmp_path: Path, hf_dir: Path) -> None:
    registry = Registry(tmp_path)
    first = registry.publish(hf_dir, parent=None, algorithm="import")
    second = registry.publish(hf_dir, parent=first.id, algorithm="dpo")
    assert first.id != second.id
    assert [m.id for m in registry.versions()] == [first.id, second.id]
    assert registry.get(second.id).parent == first.id


def test_tampering_is_detected(tmp_path: Path, hf_dir: Path) -> None:
    registry = Registry(tmp_path)
    version = registry.publish(hf_dir, parent=None, algorithm="import")
    weights = registry.path(version.id) / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    (registry.path(version.id) / "config.json").unlink()
    assert registry.verify(version.id) == ["config.json: missing", "model.safetensors: checksum mismatch"]


def test_malformed_sources_and_unknown_versions_are_refused(tmp_path: Path, hf_dir: Path) -> None:
    registry = Registry(tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="neither a Hugging Face model directory"):
        registry.publish(tmp_path / "empty", parent=None, algorithm="import")
    with pytest.raises(RegistryError, match="unknown version 'ver_nope'"):
        registry.get("ver_nope")


@pytest.mark.parametrize("name", ["", "../r2/ver_01JDX3ZQ4M0000000000000000", "ver_\x00", "manifest.json", "ver_0"])
def test_only_version_ids_reach_the_file_system(tmp_path: Path, hf_dir: Path, name: str) -> None:
    """Version ids come from callers (AdminService, the OpenAI API's `model`): none may name another path."""
    registry = Registry(tmp_path / "r")
    elsewhere = Registry(tmp_path / "r2").publish(hf_dir, parent=None, algorithm="import")
    for call in (registry.path, registry.get):
        with pytest.raises(RegistryError, match="not a version id"):
            call(name.replace("ver_01JDX3ZQ4M0000000000000000", elsewhere.id))


def test_a_model_directory_is_imported_once_and_changed_files_make_a_new_import(
    tmp_path: Path, hf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path / "registry")
    first = registry.import_once(hf_dir)
    monkeypatch.chdir(hf_dir.parent)  # a relative path to the same directory is the same import
    assert registry.import_once(Path(hf_dir.name)) == first
    assert registry.import_once(registry.path(first.id)) == first  # a version is its own import
    (hf_dir / "extra.txt").write_text("changed")
    try:
        assert registry.import_once(hf_dir).id != first.id
    finally:
        (hf_dir / "extra.txt").unlink()


def test_a_sequence_classifier_is_a_reward_version(tmp_path: Path, hf_dir: Path) -> None:
    from transformers import LlamaForSequenceClassification

    config = LlamaConfig.from_pretrained(hf_dir)
    config.num_labels, config.pad_token_id = 1, 0
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    assert Registry(tmp_path / "registry").publish(tmp_path / "rm", parent=None, algorithm="rm").kind == "reward"


@pytest.mark.integration
def test_pointers_promote_canary_and_roll_back_with_announcements(stack: TrimtabConfig) -> None:
    async def scenario() -> None:
        client = redis_client(stack.redis)
        store = PointerStore(client, f"{stack.redis.key_prefix}{uuid.uuid4().hex[:6]}:", "registry:changes")
        heard: list[str] = []

        async def listen() -> None:
            async for change in store.changes():
                heard.append(change)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.2)  # subscribed before the first change
        assert (await store.read()).current is None
        assert (await store.promote("ver_a")).current == "ver_a"
        pointers = await store.set_canary("ver_b", 0.25)
        assert (pointers.current, pointers.canary, pointers.canary_share) == ("ver_a", "ver_b", 0.25)
        pointers = await store.promote("ver_b")  # promoting the canary ends the canary
        assert (pointers.current, pointers.canary) == ("ver_b", None)
        assert (await store.rollback_current()).current == "ver_a"
        with pytest.raises(PointerError, match="no earlier current version"):
            await store.rollback_current()
        with pytest.raises(PointerError, match="canary share must be in"):
            await store.set_canary("ver_c", 1.5)
        await store.set_canary("ver_c", 0.5)
        assert await store.clear_canary(only="ver_b") is None  # only while it is that version: unchanged
        assert (await store.read()).canary == "ver_c"
        with pytest.raises(PointerError, match="'ver_b' is neither current nor canary"):
            await store.rollback("ver_b")
        assert await store.clear_canary(only="ver_c") == "ver_c" and (await store.read()).canary is None
        await asyncio.sleep(0.2)
        listener.cancel()
        await client.aclose()
        assert heard == ["current", "canary", "current", "current", "canary", "canary"]

    asyncio.run(scenario())


@pytest.mark.integration
def test_versions_cli_publishes_lists_promotes_and_rolls_back(
    stack: TrimtabConfig, tmp_path: Path, hf_dir: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")} | {
        "TRIMTAB_REGISTRY__ROOT": str(tmp_path / "registry"),
        "TRIMTAB_REDIS__URL": stack.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": f"{stack.redis.key_prefix}{uuid.uuid4().hex[:6]}:",
    }

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "trimtab.app.cli", "versions", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = cli("publish", str(hf_dir)).split()[1]
    second = cli("publish", str(hf_dir), "--parent", first, "--algorithm", "dpo").split()[1]
    assert cli("promote", first) == f"current -> {first}\n"
    assert cli("promote", second) == f"current -> {second}\n"
    listed = cli("list").splitlines()
    assert [line.split()[0] for line in listed] == [first, second] and "current" in listed[1]
    assert '"algorithm": "dpo"' in cli("show", second) and "files: intact" in cli("show", second)
    assert cli("rollback") == f"current {second} rolled back to {first}\n"
    failed = subprocess.run(
        [sys.executable, "-m", "trimtab.app.cli", "versions", "promote", "ver_missing"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and "unknown version 'ver_missing'" in failed.stderr


@pytest.mark.integration
def test_a_pointer_action_waits_for_redis_to_come_back(
    stack: TrimtabConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The learner's view: Redis restarting must not stop it (a chaos run's learner died of one)."""
    config = config_with(
        tmp_path,
        kafka__bootstrap_servers=stack.kafka.bootstrap_servers,  # `up` then starts only the Redis
        redis__url=f"redis://127.0.0.1:{free_port()}/0",
    )
    starting = threading.Timer(2.0, up, args=(config,))
    starting.start()
    try:
        with caplog.at_level(logging.WARNING, logger="trimtab.registry.commands"):
            pointers = with_pointers(config, lambda p: p.set_canary("ver_waited", 0.5), wait_s=60)
        assert (pointers.canary, pointers.canary_share) == ("ver_waited", 0.5)
        assert "Redis is unreachable" in caplog.text
    finally:
        starting.join()
        down(config)


def test_a_pointer_action_fails_once_its_wait_is_over(tmp_path: Path) -> None:
    config = config_with(tmp_path, redis__url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        with_pointers(config, lambda p: p.read(), wait_s=1.5)
    assert 1.5 <= time.monotonic() - started < 15
    with pytest.raises(RedisConnectionError):  # an operator's command (no wait) fails at once
        with_pointers(config, lambda p: p.read())
