"""`trimtab demo` / `make demo`: the closed loop on one machine, watched live, then reported.

    [1/4] the local stack (broker, Redis, topics): `trimtab.app.stack.up`
    [2/4] `trimtab serve`, `trimtab feedback`, the online learner (torchrun, 2 ranks), logs in <run>/
    [3/4] simulated users for `demo.users.duration_s`, with a live display (Ctrl-C stops them early)
    [4/4] the feedback topic archived into <run>/ (`trimtab.app.demo.archive`), every process stopped (SIGTERM,
          then SIGKILL after `demo.stop_timeout_s`), the final check (latest promoted version vs the
          default model), the report

The learner's CPU time (its whole process tree) is sampled while the users run and totalled when it is
reaped (`trimtab.app.demo.processes`); with what each published version trained on (its
`feedback_ids.json`), the report turns it into feedback-to-serving freshness and reward gain per CPU
minute.

By default a run is isolated (`demo.isolate_run`): its own Redis key prefix (purged at the end), registry
directory and topic names, so it starts from the default model whatever an earlier run promoted. The
children read the run's effective config from <run>/config.yaml and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

import grpc
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from trimtab.app.demo.archive import FEEDBACK_ARCHIVE, archive_feedback
from trimtab.app.demo.live import LiveStats, render, status_line
from trimtab.app.demo.monitor import VersionMonitor
from trimtab.app.demo.processes import (
    DemoProcess,
    ProcessDied,
    TreeCpu,
    child_env,
    learner_command,
    stop_all,
    trimtab_command,
)
from trimtab.app.demo.quality import QualityCheck, evaluate_promoted, latest_promoted
from trimtab.app.demo.records import Clock, CpuSample, Interaction, LearnerCpu, trained_versions
from trimtab.app.demo.report import RunRecords, summary_table, write_report
from trimtab.app.demo.users import SimulatedUsers
from trimtab.app.stack import up
from trimtab.config import SuiteConfig, TrimtabConfig, handoff
from trimtab.errors import TrimtabError
from trimtab.health import wait_serving
from trimtab.ports import free_port
from trimtab.records import purge_prefix
from trimtab.registry import Registry
from trimtab.simulation.world import World
from trimtab.v1 import inference_pb2, inference_pb2_grpc


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    report: Path
    failed_requests: int
    accepted: int
    quality: QualityCheck | None
    exit_codes: dict[str, int | None]
    interrupted: bool  # Ctrl-C / SIGTERM stopped the users early (the report covers what ran)


@dataclass
class _Services:
    """The running children and where to reach serving and feedback."""

    processes: list[DemoProcess]
    serving_address: str
    feedback_address: str


@dataclass(frozen=True)
class _UsersOutcome:
    interactions: list[Interaction]
    monitor: VersionMonitor
    clock: Clock
    learner_cpu: list[CpuSample]  # the learner's process tree, sampled while the users ran
    duration_s: float
    interrupted: bool
    died: ProcessDied | None


def run_demo(config: TrimtabConfig, console: Console) -> DemoResult:
    """The whole demo; raises TrimtabError (one line) when it cannot start or a process dies."""
    demo = config.demo
    if demo.serving_address is None and not (config.model.path / "config.json").is_file():
        raise TrimtabError(f"no model at {config.model.path}: run `trimtab model build` (make demo does)")
    run_dir = new_run_dir(demo.output_dir)
    config = with_free_ports(isolated(config, run_dir) if demo.isolate_run else config)
    config = in_the_world(config, demo.reward_judge)
    config_file = run_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump(handoff(config), sort_keys=False))
    console.print(f"demo run [bold]{run_dir}[/]")
    console.print("[1/4] local stack")
    up(config, report=lambda line: console.print(f"  {line}"))
    services = _Services([], "", "")
    with _sigterm_as_interrupt(), _purged_after(config):
        try:
            console.print("[2/4] serving, feedback" + (", online learner" if demo.learner else " (learner off)"))
            start_services(config, run_dir, config_file, services, console)
            console.print(f"[3/4] simulated users for {demo.users.duration_s:.0f} s (Ctrl-C stops them early)")
            outcome = _run_users(config, services, console)
            archived = _archive(config, run_dir, outcome, console)
        finally:
            console.print("[4/4] stopping " + ", ".join(p.name for p in services.processes))
            exit_codes = stop_all(services.processes[::-1], demo.stop_timeout_s)
            console.print("  " + "  ".join(f"{name} exited {code}" for name, code in exit_codes.items()))
        quality, notes = _final_check(config, outcome, console)
        notes += archived
        report = write_report(
            run_dir, _records(config, run_dir, services, outcome, quality, notes), demo.bin_s, demo.rolling_window
        )
    console.print(summary_table(report, quality))
    if outcome.died is not None:
        raise outcome.died
    summary = report.summary
    return DemoResult(
        run_dir, report.html, summary.failed, sum(summary.accepted.values()), quality, exit_codes, outcome.interrupted
    )


def new_run_dir(output_dir: Path) -> Path:
    run_dir = (output_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}").resolve()
    run_dir.mkdir(parents=True)
    return run_dir


def isolated(config: TrimtabConfig, run_dir: Path) -> TrimtabConfig:
    """The config of a run that shares nothing with earlier ones: Redis key prefix, registry, topics and
    the online learner's checkpoints."""
    suffix = f"demo-{run_dir.name}"
    topics = config.kafka.topics
    renamed = {
        role: getattr(topics, role).model_copy(update={"name": f"{getattr(topics, role).name}.{suffix}"})
        for role in type(topics).model_fields
    }
    online = config.learner.online.model_copy(update={"checkpoint_dir": run_dir / "learner"})
    return config.model_copy(
        update={
            "redis": config.redis.model_copy(update={"key_prefix": f"{config.redis.key_prefix}{suffix}:"}),
            "registry": config.registry.model_copy(update={"root": run_dir / "registry"}),
            "kafka": config.kafka.model_copy(update={"topics": topics.model_copy(update=renamed)}),
            "learner": config.learner.model_copy(update={"online": online}),
        }
    )


def in_the_world(config: TrimtabConfig, judge: Literal["gold", "reward_model"]) -> TrimtabConfig:
    """The config of a run in the simulation: the world's evaluation suite (`suite.kind: world`), and the
    learner's reward gate scored by `judge` (demo.reward_judge): the suite's judge, the world's gold
    reward, or the learner's own reward model. Judged by its reward model, the run is an operator's without
    an independent judge, so the users' agreement with one (learner.online.raters) is off too."""
    online = config.learner.online
    gates = online.gates.model_copy(update={"reward_judge": "suite" if judge == "gold" else judge})
    raters = online.raters.model_copy(update={"judge": "suite" if judge == "gold" else "off"})
    learner = config.learner.model_copy(update={"online": online.model_copy(update={"gates": gates, "raters": raters})})
    return config.model_copy(update={"learner": learner, "suite": SuiteConfig(kind="world")})


def with_free_ports(config: TrimtabConfig) -> TrimtabConfig:
    """Port 0 ("any free port") replaced by a free port now: the harness must know where to connect."""
    feedback = config.feedback.model_copy(
        update={
            "grpc_port": config.feedback.grpc_port or free_port(),
            "http_port": config.feedback.http_port or free_port(),
        }
    )
    # The OpenAI API's feedback goes to this run's own feedback service.
    openai = config.serving.openai.model_copy(
        update={
            "port": config.serving.openai.port or free_port(),
            "feedback_address": f"{_loopback(feedback.grpc_host)}:{feedback.grpc_port}",
        }
    )
    serving = config.serving.model_copy(update={"port": config.serving.port or free_port(), "openai": openai})
    return config.model_copy(update={"serving": serving, "feedback": feedback})


def start_services(
    config: TrimtabConfig, run_dir: Path, config_file: Path, services: _Services, console: Console
) -> None:
    """Start serving (unless demo.serving_address names one), feedback and the learner; wait until serving
    and feedback say SERVING. Appends to `services.processes` as it goes, so the caller can stop them."""
    demo = config.demo
    env = child_env(config_file)
    ports = metrics_ports(config)
    if demo.serving_address is None:
        serve_env = env | ports.get("serve", {})
        services.processes.append(DemoProcess("serve", trimtab_command("serve"), run_dir / "serve.log", serve_env))
        services.serving_address = f"{_loopback(config.serving.host)}:{config.serving.port}"
    else:
        services.serving_address = demo.serving_address
    feedback_env = env | ports.get("feedback", {})
    services.processes.append(
        DemoProcess("feedback", trimtab_command("feedback"), run_dir / "feedback.log", feedback_env)
    )
    services.feedback_address = f"{_loopback(config.feedback.grpc_host)}:{config.feedback.grpc_port}"
    for process in services.processes:
        process.start()
    for process in services.processes:
        address = services.serving_address if process.name == "serve" else services.feedback_address
        started = time.monotonic()
        assert process.process is not None
        if not wait_serving(address, process.process, demo.start_timeout_s):
            process.check()
            raise ProcessDied(
                f"{process.name} not SERVING at {address} after {demo.start_timeout_s:.0f} s: see {process.log}"
            )
        console.print(
            f"  {process.name:<8} {address:<22} SERVING after {time.monotonic() - started:.0f} s (pid {process.pid})"
        )
    for process in services.processes:
        if process.name in ports:
            console.print(
                f"  {process.name:<8} /metrics on port {ports[process.name]['TRIMTAB_TELEMETRY__PROMETHEUS_PORT']}"
            )
    warm_up(services.serving_address, demo.start_timeout_s, console)
    if demo.learner:
        argv, extra = learner_command()
        learner_env = env | extra | ports.get("learner", {})
        learner = DemoProcess("learner", argv, run_dir / "learner.log", learner_env, stop_through_children=True)
        services.processes.append(learner)
        learner.start()
        console.print(f"  learner  {' '.join(argv[1:])}  (pid {learner.pid})")
        if "learner" in ports:
            console.print(
                f"  learner  /metrics on port {ports['learner']['TRIMTAB_TELEMETRY__PROMETHEUS_PORT']} (rank 0)"
            )


# With telemetry.metrics: prometheus, each child serves /metrics on a port of its own: serving on
# telemetry.prometheus_port, feedback on the next, the learner's rank 0 on the one after, as
# deploy/observability/prometheus.yml scrapes them (9464, 9465, 9466 by default).
METRICS_PORT_OFFSETS = {"serve": 0, "feedback": 1, "learner": 2}


def metrics_ports(config: TrimtabConfig) -> dict[str, dict[str, str]]:
    """Each child's extra environment for its /metrics port (none unless metrics go to Prometheus)."""
    if config.telemetry.metrics != "prometheus":
        return {}
    base = config.telemetry.prometheus_port
    return {
        name: {"TRIMTAB_TELEMETRY__PROMETHEUS_PORT": str(base + offset)}
        for name, offset in METRICS_PORT_OFFSETS.items()
    }


def warm_up(serving_address: str, timeout_s: float, console: Console) -> None:
    """One request before the users start: a fresh engine's first batches are slow (seconds), which would
    otherwise show up as the users' first latencies."""
    request = inference_pb2.GenerateRequest(user_id="demo-warm-up", n=2)
    request.prompt.chat.messages.add(role="user", content="Hello!")
    started = time.monotonic()
    with grpc.insecure_channel(serving_address) as channel:
        try:
            inference_pb2_grpc.InferenceServiceStub(channel).Generate(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise TrimtabError(f"serving at {serving_address} failed its warm-up request: {exc}") from None
    console.print(f"  warm-up request answered in {time.monotonic() - started:.1f} s")


def _run_users(config: TrimtabConfig, services: _Services, console: Console) -> _UsersOutcome:
    try:
        return asyncio.run(_watch(config, services, console))
    except asyncio.CancelledError:  # a second Ctrl-C while stopping
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, _interrupt)  # the event loop's handler went with it


async def _watch(config: TrimtabConfig, services: _Services, console: Console) -> _UsersOutcome:
    """Users, version monitor and process checks, with the live display, until the users are done."""
    demo = config.demo
    clock = Clock()
    stop, done_polling = asyncio.Event(), asyncio.Event()
    interrupted = False
    main = asyncio.current_task()

    def on_signal() -> None:
        nonlocal interrupted
        if stop.is_set() and main is not None:
            main.cancel()
        interrupted = True
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    stats, interactions = LiveStats(demo.rolling_window), []

    def record(interaction: Interaction) -> None:
        interactions.append(interaction)
        stats.add(interaction, clock.now())

    users = SimulatedUsers(demo.users, World(config.world), services.serving_address, services.feedback_address, clock)
    monitor = VersionMonitor(config, services.serving_address, clock)
    monitoring = asyncio.create_task(monitor.run(done_polling, demo.refresh_s))
    traffic = asyncio.create_task(users.run(stop, record))
    died: ProcessDied | None = None
    pids = [(p.name, p.pid) for p in services.processes]
    learner = next((TreeCpu(p.pid) for p in services.processes if p.name == "learner" and p.pid), None)
    cpu: list[CpuSample] = []

    def frame() -> Table:
        return render(stats, monitor, clock.now(), demo.users.duration_s, pids, stop.is_set())

    with Live(frame(), console=console, refresh_per_second=4) if demo.live else contextlib.nullcontext() as live:
        last_line = 0.0
        while not traffic.done():
            await asyncio.wait({traffic}, timeout=demo.refresh_s)
            if learner is not None:
                cpu.append(CpuSample(clock.now(), learner.sample()))
            died = died or _first_death(services.processes)
            if died is not None and not traffic.done():
                traffic.cancel()  # the rest would only fail or retry against a dead process
            if live is not None:
                live.update(frame())
            elif clock.now() - last_line >= demo.bin_s:
                last_line = clock.now()
                console.print(status_line(stats, monitor, clock.now()))
    if live is not None and not console.is_terminal:
        console.print()  # the last frame ends without a newline when the output is not a terminal
    duration = clock.now()
    done_polling.set()
    await monitoring
    if not traffic.cancelled():
        traffic.result()  # a bug in the simulation surfaces here
    return _UsersOutcome(interactions, monitor, clock, cpu, duration, interrupted, died)


def _first_death(processes: list[DemoProcess]) -> ProcessDied | None:
    for process in processes:
        try:
            process.check()
        except ProcessDied as exc:
            return exc
    return None


def _archive(config: TrimtabConfig, run_dir: Path, outcome: _UsersOutcome, console: Console) -> list[str]:
    """The run's feedback topic into <run>/feedback.events, while the stack still runs; notes on failure."""
    accepted = {i.feedback_id for i in outcome.interactions if i.accepted and i.feedback_id is not None}
    try:
        archived = archive_feedback(config.kafka, run_dir / FEEDBACK_ARCHIVE, accepted)
    except Exception as exc:  # the report is still worth writing
        return [f"feedback topic not archived: {type(exc).__name__}: {exc}"]
    console.print(f"  {archived.events} feedback events archived to {FEEDBACK_ARCHIVE}")
    if archived.missing:
        return [f"feedback archive incomplete: {archived.missing} accepted events not found in the topic"]
    return []


def _final_check(
    config: TrimtabConfig, outcome: _UsersOutcome, console: Console
) -> tuple[QualityCheck | None, list[str]]:
    """The latest promoted version against the default model, when there is one and the run finished."""
    notes = []
    if outcome.died is not None:
        notes.append(str(outcome.died))
    if outcome.interrupted:
        notes.append(f"stopped early (interrupted) after {outcome.duration_s:.0f} s")
    version = latest_promoted(outcome.monitor.changes, outcome.monitor.initial_version)
    if config.demo.eval_prompts == 0:
        notes.append("final check skipped (demo.eval_prompts: 0)")
    elif version is None:
        notes.append("no version was promoted during the run: no final check against the default model")
    elif outcome.died is not None or outcome.interrupted:
        notes.append("final check skipped: the run did not finish")
    else:
        console.print(f"final check: {version} vs the default model on {config.demo.eval_prompts} held-out prompts")
        try:
            path = Registry(config.registry.root).path(version)
            return evaluate_promoted(config, version, path, config.demo.eval_prompts), notes
        except Exception as exc:  # the report is still worth writing
            notes.append(f"final check failed: {type(exc).__name__}: {exc}")
    return None, notes


def _records(
    config: TrimtabConfig,
    run_dir: Path,
    services: _Services,
    outcome: _UsersOutcome,
    quality: QualityCheck | None,
    notes: list[str],
) -> RunRecords:
    monitor = outcome.monitor
    versions = {a.version for i in outcome.interactions for a in i.answers} | {
        s.to_version for s in monitor.swap_list()
    }
    learner = next((p for p in services.processes if p.name == "learner"), None)
    return RunRecords(
        interactions=sorted(outcome.interactions, key=lambda i: i.at_s),
        changes=monitor.changes,
        swaps=monitor.swap_list(),
        kl={version: monitor.kl(version) for version in sorted(versions)},
        duration_s=outcome.duration_s,
        logs={p.name: p.log for p in services.processes} | {"config": run_dir / "config.yaml"},
        quality=quality,
        notes=notes,
        trained=trained_versions(config.registry.root, outcome.clock),
        learner_cpu=_learner_cpu(outcome.learner_cpu, learner) if learner is not None else None,
    )


def _learner_cpu(samples: list[CpuSample], learner: DemoProcess) -> LearnerCpu:
    """The samples and the total at exit. A learner SIGKILLed after the grace period leaves its ranks
    unreaped, out of wait4's total: the last sample is then the better lower bound."""
    totals = [cpu for cpu in (learner.cpu_s, samples[-1].cpu_s if samples else None) if cpu is not None]
    return LearnerCpu(tuple(samples), max(totals, default=None))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo like Ctrl-C does: children stopped, nothing left running."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _purged_after(config: TrimtabConfig) -> Iterator[None]:
    """An isolated run's Redis keys (response records, feedback ledger, pointers) go when it ends."""
    try:
        yield
    finally:
        if config.demo.isolate_run:
            purge_prefix(config.redis.url, config.redis.key_prefix)


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
