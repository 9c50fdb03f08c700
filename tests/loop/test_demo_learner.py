"""The short demo with the online learner on: the session's serving process, a `trimtab feedback` and
the learner's two torchrun ranks started by the harness, simulated users for 90 seconds. The
learner must consume the users' feedback, train rounds, gate each candidate through vLLM and publish
it with its numbers and its feedback ids, and stop cleanly on the harness's SIGTERM; the harness shows
the run live and writes its report. (The same run with the learner off: tests/loop/test_demo.py, in
`make test-long`.)

A real Prometheus scrapes the three processes meanwhile (the shipped scrape config, its alert rules
loaded), and every query of the shipped Grafana dashboard must return data from it.

The canary is off here: the serving process is shared with the rest of the suite, whose tests expect
its current version to stay put. Promotion and roll-back are tested on their own
(tests/learner/test_online.py); the full loop with promotions is `make demo`."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
from playwright.sync_api import sync_playwright
from rich.console import Console
from transformers import AutoModelForSequenceClassification

from learner.online.heads import REWARD_MODEL_ALGORITHM
from tests.conftest import REPO, free_port
from tests.deploy.prometheus import Prometheus, queries_without_data, running_prometheus
from tests.loop.demo_checks import served_accepted_and_reported
from tests.loop.demo_config import short_demo_config
from tests.serving_process import GUARDED_TENANT, ServingProcess
from trimtab.app.demo import DemoResult, run_demo
from trimtab.app.demo.records import Interaction, read_jsonl
from trimtab.app.ops.panels import panels
from trimtab.config import TrimtabConfig
from trimtab.registry import FEEDBACK_IDS, Registry
from trimtab.v1 import admin_pb2, admin_pb2_grpc, feedback_pb2, feedback_pb2_grpc, inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration

USERS_S = 90
SCREENSHOTS = REPO / ".trimtab/test-artifacts"


@dataclass(frozen=True)
class LearnerDemo:
    """A finished run, and the Prometheus that scraped it (still running: its data can be queried)."""

    config: TrimtabConfig
    result: DemoResult
    topic: str
    prometheus: Prometheus
    started: float
    ended: float
    promoted: str  # the run's last policy version, made current after the run (a real hot swap)
    initial: str  # the serving process's version before and after
    console: str  # what the harness showed


@pytest.fixture(scope="module")
def demo(serving: ServingProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LearnerDemo]:
    tmp_path = tmp_path_factory.mktemp("learner-demo")
    topic = f"trimtab.feedback.learner-demo-{uuid.uuid4().hex[:8]}"  # only this run's feedback
    metrics_port, feedback_port = free_ports_in_a_row(3), free_port()  # the demo's children: +1 feedback, +2 learner
    config = short_demo_config(
        serving,
        tmp_path,
        TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME=topic,
        TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS="2",
        TRIMTAB_DEMO__LEARNER="true",
        TRIMTAB_DEMO__USERS__DURATION_S=str(USERS_S),
        # Not test_demo.py's seed: the users derive their feedback ids (idempotency keys) from it, and the
        # feedback service, shared through the session's Redis, would answer ALREADY_EXISTS.
        TRIMTAB_DEMO__USERS__SEED="1",
        TRIMTAB_LEARNER__ONLINE__CHECKPOINT_DIR=str(tmp_path / "learner"),
        TRIMTAB_LEARNER__ONLINE__GROUP_ID=f"learner-demo-{uuid.uuid4().hex[:8]}",
        TRIMTAB_LEARNER__ONLINE__ROUND__EXAMPLES="24",
        TRIMTAB_LEARNER__ONLINE__ROUND__EPOCHS="1",
        TRIMTAB_LEARNER__ONLINE__ROUND__ANCHOR_EXAMPLES="4",
        TRIMTAB_LEARNER__ONLINE__GATES__HELDOUT_PROMPTS="8",
        # The reward gate judged as a deployment judges it: by the learner's own reward model.
        TRIMTAB_DEMO__REWARD_JUDGE="reward_model",
        TRIMTAB_LEARNER__ONLINE__REWARD_MODEL__MIN_EXAMPLES="8",
        TRIMTAB_LEARNER__ONLINE__CANARY__ENABLED="false",
        TRIMTAB_TELEMETRY__METRICS="prometheus",
        TRIMTAB_TELEMETRY__PROMETHEUS_PORT=str(metrics_port),
        TRIMTAB_FEEDBACK__GRPC_PORT=str(feedback_port),
    )
    targets = {
        "trimtab-serving": f"127.0.0.1:{serving.config.telemetry.prometheus_port}",
        "trimtab-feedback": f"127.0.0.1:{metrics_port + 1}",
        "trimtab-learner": f"127.0.0.1:{metrics_port + 2}",
    }
    with running_prometheus(tmp_path / "prometheus", targets) as prometheus:
        started = time.time()
        # What the simulated users do not: a refused feedback, and prompts the guardrails check (before and
        # after the run: a rate needs two scrapes of a series, and a series appears at its first sample).
        ask_as_the_guarded_tenant(serving.address)
        refusal = threading.Thread(target=refuse_one_feedback, args=(f"127.0.0.1:{feedback_port}",), daemon=True)
        refusal.start()
        console = io.StringIO()
        result = run_demo(config, Console(file=console, width=240, force_terminal=False))
        refusal.join(timeout=30)
        registry = Registry(config.registry.root)
        published = [m.id for m in registry.versions() if m.algorithm == "online" and m.data_source == topic]
        assert published, (result.run_dir / "learner.log").read_text(errors="replace")[-3000:]
        with grpc.insecure_channel(serving.address) as channel:
            # An operator promotes the run's last version (a hot swap), answers come from it, and they
            # promote the first version back (a second swap; the rest of the session expects it).
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            initial = admin.GetStatus(admin_pb2.GetStatusRequest()).status.current_version_id
            try:
                status = admin.Promote(admin_pb2.PromoteRequest(version_id=published[-1]), timeout=120).status
                assert status.current_version_id == published[-1]
                ask_as_the_guarded_tenant(serving.address)
                time.sleep(3)  # three scrapes
            finally:
                admin.Promote(admin_pb2.PromoteRequest(version_id=initial), timeout=120)
        ask_as_the_guarded_tenant(serving.address)
        time.sleep(3)
        ended = time.time()
        yield LearnerDemo(config, result, topic, prometheus, started, ended, published[-1], initial, console.getvalue())


def test_the_online_learner_trains_gates_and_publishes_from_the_users_feedback(
    serving: ServingProcess, demo: LearnerDemo
) -> None:
    result, topic = demo.result, demo.topic
    rows = [Interaction.from_json(row) for row in read_jsonl(result.run_dir / "interactions.jsonl")]
    assert result.failed_requests == 0, [row.error for row in rows if row.failed][:5]
    log = (result.run_dir / "learner.log").read_text(errors="replace")
    assert result.exit_codes.get("learner") == 0, log[-3000:]  # SIGTERM: finish the round, checkpoint, exit

    registry = Registry(serving.config.registry.root)
    published = [m for m in registry.versions() if m.algorithm == "online" and m.data_source == topic]
    assert published, log[-3000:]
    accepted = {row.feedback_id for row in rows if row.accepted}
    for manifest in published:
        gate_numbers = {"gate/candidate_reward", "gate/current_reward", "gate/reward_difference_stderr"}
        assert gate_numbers | {"gate/candidate_kl"} <= set(manifest.metrics)
        trained = set(json.loads((registry.path(manifest.id) / FEEDBACK_IDS).read_text()))
        assert trained and trained <= accepted  # the users' own feedback, nothing else

    # The reward model: trained on the users' ratings and pairs, published as reward versions that
    # transformers loads as a scalar-head model, and the judge of every gate once it had trained enough.
    reward_models = [m for m in registry.versions() if m.algorithm == REWARD_MODEL_ALGORITHM and m.data_source == topic]
    assert reward_models and {m.kind for m in reward_models} == {"reward"}, log[-3000:]
    # Over the run: a round's mix is the users' draw, and the last (short) round may hold no rating.
    assert {"rm/loss", "rm_rating/loss"} <= set().union(*(m.metrics for m in reward_models))
    assert set(json.loads((registry.path(reward_models[-1].id) / FEEDBACK_IDS).read_text())) <= accepted
    judged = [m for m in published if m.config["reward_model"] is not None]
    rm_numbers = {"gate/candidate_rm_reward", "gate/current_rm_reward", "gate/rm_reward_difference_stderr"}
    rm_numbers |= {"gate/reward_model_agreement_prompts"}
    assert judged and all(rm_numbers <= set(m.metrics) for m in judged)
    scorer = AutoModelForSequenceClassification.from_pretrained(registry.path(reward_models[-1].id))
    assert scorer.config.num_labels == 1


def test_every_user_interaction_is_served_and_accepted_and_the_report_shows_the_run(demo: LearnerDemo) -> None:
    served_accepted_and_reported(demo.result, demo.console, USERS_S)
    assert demo.result.exit_codes == {"feedback": 0, "learner": 0}  # the harness started both and stopped them


def test_every_dashboard_query_has_data_from_a_real_prometheus_scraping_the_three_processes(
    demo: LearnerDemo,
) -> None:
    prometheus = demo.prometheus
    assert queries_without_data(prometheus, demo.started, demo.ended) == [], prometheus.log.read_text()[-2000:]
    # A latency histogram with the SDK's default buckets (0-5 s first) made this alert pending at once.
    assert prometheus.query_range('ALERTS{alertname="TrimtabFeedbackProduceSlow"}', demo.started, demo.ended) == []


def test_the_ops_page_shows_versions_gates_and_live_charts_in_a_real_browser(demo: LearnerDemo) -> None:
    """`trimtab ops` over the run's registry, pointers, versions topic and Prometheus, in Debian's chromium
    driven by Playwright; the screenshot is kept in .trimtab/test-artifacts/."""
    registry = Registry(demo.config.registry.root)
    published = [m.id for m in registry.versions() if m.algorithm == "online" and m.data_source == demo.topic]
    assert published
    with running_ops(demo) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(url)
        page.wait_for_selector("body[data-loaded=true]", timeout=60_000)
        assert page.locator("#problems").inner_text() == ""
        for version in published:
            row = page.locator(f'#versions tr[data-version="{version}"]')
            assert "PUBLISHED" in row.inner_text() and "candidate_kl" in row.inner_text(), row.inner_text()
        assert page.locator("#current").inner_text() == demo.initial
        # The operator's promotion reached the timeline as serving's own version events.
        assert "SWAP_APPLIED" in page.locator(f'#versions tr[data-version="{demo.promoted}"]').inner_text()
        charts = page.locator("#panels .panel")
        assert charts.count() == len(panels())
        assert page.locator("#panels .panel:has(.nodata)").count() == 0, page.locator("#panels").inner_text()
        assert page.locator('#panels .panel[data-title="Requests/s by outcome"] polyline').count() >= 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "ops-page.png", full_page=True)
        browser.close()
    assert (SCREENSHOTS / "ops-page.png").read_bytes().startswith(b"\x89PNG")


@contextmanager
def running_ops(demo: LearnerDemo) -> Iterator[str]:
    """`trimtab ops` as an operator starts it, reading what the demo wrote; its URL."""
    config, port = demo.config, free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")} | {
        "TRIMTAB_REGISTRY__ROOT": str(config.registry.root),
        "TRIMTAB_REDIS__URL": config.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": config.redis.key_prefix,
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "TRIMTAB_KAFKA__TOPICS__VERSIONS__NAME": config.kafka.topics.versions.name,
        "TRIMTAB_OPS__PORT": str(port),
        "TRIMTAB_OPS__PROMETHEUS_URL": demo.prometheus.url,
        "TRIMTAB_OPS__WINDOW_S": str(round(time.time() - demo.started) + 60),
        "TRIMTAB_OPS__STEP_S": "5",
    }
    log = demo.prometheus.log.with_name("ops.log")
    command = [sys.executable, "-m", "trimtab.app.cli", "ops"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while not _answers(url + "healthz"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()[-2000:]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def free_ports_in_a_row(count: int) -> int:
    """A port P with P .. P+count-1 all free now."""
    for _ in range(100):
        base = free_port()
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {count} free ports in a row")


def refuse_one_feedback(address: str) -> None:
    """Once the demo's feedback service answers: one submission it refuses (an unknown response)."""
    bad = feedback_pb2.SubmitRequest(
        feedback_id=str(uuid.uuid4()),
        user_id="nobody",
        response_id="resp_unknown",
        label=feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP),
    )
    deadline = time.monotonic() + 300
    with grpc.insecure_channel(address) as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                stub.Submit(bad, timeout=5)
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return  # refused, and counted
            time.sleep(1)


def ask_as_the_guarded_tenant(address: str) -> None:
    """Two prompts of the tenant whose guardrails are on in the session's serving process."""
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for text in ("What is 3 plus 5?", "My email is ana42@example.com. What is 2 plus 2?"):
            request = inference_pb2.GenerateRequest(user_id="guarded-user", tenant=GUARDED_TENANT)
            request.prompt.chat.messages.add(role="user", content=text)
            stub.Generate(request, timeout=120)
