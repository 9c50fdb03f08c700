"""`trimtab ops`'s parts: the versions timeline from manifests, pointers and decisions, a page that keeps
answering (and says why) when Prometheus is not there, and only to admin keys when auth is on.
(tests/loop/test_demo_learner.py opens the page in a real browser over a real run and a real Prometheus.)"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import test_utils

from tests.conftest import config_with, free_port
from trimtab.app.ops.panels import panels
from trimtab.app.ops.server import OpsApp
from trimtab.app.ops.sources import version_rows
from trimtab.auth import hash_key
from trimtab.config import TrimtabConfig
from trimtab.config.auth import ApiKeyConfig, AuthConfig
from trimtab.registry import Manifest, Pointers

T0 = datetime(2026, 12, 4, tzinfo=UTC)


def manifest(version: str, minutes: int, **metrics: float) -> Manifest:
    return Manifest(
        id=version,
        kind="full",
        parent=None,
        algorithm="online",
        created_at=T0 + timedelta(minutes=minutes),
        metrics={f"gate/{name}": value for name, value in metrics.items()} | {"train/loss": 0.5},
        event_counts={"pairwise": 3, "thumb": 2},
        files={},
    )


def test_the_timeline_is_newest_first_with_gates_decisions_and_what_serves() -> None:
    versions = [manifest("ver_a", 0), manifest("ver_b", 1, candidate_kl=0.4), manifest("ver_c", 2, candidate_kl=9.0)]
    decisions = {
        "ver_b": [{"type": "PUBLISHED"}, {"type": "PROMOTED", "reason": "won the canary", "occurred_at": "t"}],
        "ver_c": [{"type": "REFUSED", "reason": "KL 9.0 over 5.0"}],
    }
    rows = version_rows(versions, Pointers("ver_b", "ver_a", 0.1), decisions, newest=10)
    assert [row["id"] for row in rows] == ["ver_c", "ver_b", "ver_a"]
    assert [row["role"] for row in rows] == ["", "current", "canary 10%"]
    assert rows[1]["gate"] == {"candidate_kl": 0.4} and rows[1]["trained_items"] == 5  # train/ metrics left out
    assert rows[1]["decisions"][1] == {"type": "PROMOTED", "reason": "won the canary", "at": "t"}
    assert rows[0]["decisions"] == [{"type": "REFUSED", "reason": "KL 9.0 over 5.0", "at": ""}]
    assert len(version_rows(versions, None, {}, newest=2)) == 2


def test_without_prometheus_the_page_says_so_and_still_lists_the_versions(stack: TrimtabConfig, tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        kafka__bootstrap_servers=stack.kafka.bootstrap_servers,
        redis__url=stack.redis.url,
        registry__root=str(tmp_path / "registry"),
        ops__prometheus_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
    )

    async def scenario() -> tuple[dict[str, object], dict[str, object], str]:
        async with test_utils.TestClient(test_utils.TestServer(OpsApp(config).app())) as client:
            charts = await (await client.get("/api/panels")).json()
            versions = await (await client.get("/api/versions")).json()
            page = await (await client.get("/")).text()
            return charts, versions, page

    charts, versions, page = asyncio.run(scenario())
    assert charts["panels"] == [] and "Prometheus at http://127.0.0.1:" in str(charts["problems"])
    assert versions["versions"] == [] and isinstance(versions["problems"], list)
    assert "<title>trimtab ops</title>" in page and "{{refresh_ms}}" not in page
    assert len(panels()) >= 20


def test_with_auth_on_only_admin_keys_see_the_page(stack: TrimtabConfig, tmp_path: Path) -> None:
    """Bearer, x-api-key or a browser's Basic prompt (the key as the password); a tenant's key is refused."""
    keys = [
        ApiKeyConfig(name="operator", sha256=hash_key("op-secret"), tenant="default", admin=True),
        ApiKeyConfig(name="app", sha256=hash_key("app-secret"), tenant="default"),
    ]
    config = config_with(tmp_path, kafka__bootstrap_servers=stack.kafka.bootstrap_servers, redis__url=stack.redis.url)
    config = config.model_copy(update={"auth": AuthConfig(enabled=True, api_keys=keys)})

    def basic(password: str) -> dict[str, str]:
        return {"authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}

    async def statuses() -> dict[str, tuple[int, str]]:
        calls = {
            "no key": {},
            "unknown key": {"authorization": "Bearer nope"},
            "tenant key": {"x-api-key": "app-secret"},
            "admin bearer": {"authorization": "Bearer op-secret"},
            "admin x-api-key": {"x-api-key": "op-secret"},
            "admin basic": basic("op-secret"),
            "tenant basic": basic("app-secret"),
            "not base64": {"authorization": "Basic !!!"},
        }
        async with test_utils.TestClient(test_utils.TestServer(OpsApp(config).app())) as client:
            seen = {}
            for name, headers in calls.items():
                response = await client.get("/", headers=headers)
                seen[name] = (response.status, response.headers.get("WWW-Authenticate", ""))
            seen["healthz"] = ((await client.get("/healthz")).status, "")
            return seen

    seen = asyncio.run(statuses())
    challenge = 'Basic realm="trimtab ops"'
    assert seen == {
        "no key": (401, challenge),
        "unknown key": (401, challenge),
        "tenant key": (403, ""),
        "admin bearer": (200, ""),
        "admin x-api-key": (200, ""),
        "admin basic": (200, ""),
        "tenant basic": (403, ""),
        "not base64": (401, challenge),
        "healthz": (200, ""),
    }
