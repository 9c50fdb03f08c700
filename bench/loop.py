"""The closed loop's efficiency: feedback-to-policy freshness and gold-reward gain per learner CPU minute,
online learning vs retraining from scratch in one batch on the same feedback.

1. A short `trimtab demo` with the online learner on (or `--run DIR`: a finished run). Its records give
   each accepted feedback event's acceptance time and the version of every served answer; its registry
   gives what each learner version trained on (`feedback_ids.json` + parents); its harness sampled the
   learner's CPU time (the whole torchrun tree, gate processes included) and archived the feedback topic.
2. Online: freshness = time from an event's acceptance to the first answer served by a version trained
   on it (p50, p90); cost = learner CPU used by the time the version under test was published: the
   final check's (the latest promoted), or when none was promoted the newest the learner published.
3. Batch: `bench.batch_retrain` retrains from the default model, in one round, on the events that
   version's lineage trained (the same items, mix and training code), as two torchrun ranks like the
   learner; its CPU time is its process tree's, measured the same way (wait4). Its freshness is what a
   batch job started when the users stopped would give: (end of the run + its wall time) - acceptance.
4. Both versions are evaluated together, against the default model, on the final check's held-out
   prompts (`learner.evaluate`): gain = mean greedy gold reward - the default model's.

Rows: freshness p50 (lower is better) and gain per CPU minute (higher is better), online vs batch.

    python -m bench.loop                       # a 240 s demo, then the comparison (bench/results/loop/)
    python -m bench.loop --run .trimtab/demo/RUN
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bench.report import Comparison, write_report
from bench.simulation import simulation_config
from trimtab.app.demo import analysis
from trimtab.app.demo.archive import FEEDBACK_ARCHIVE
from trimtab.app.demo.processes import DemoProcess, child_env, torchrun_command
from trimtab.app.demo.quality import QualityCheck
from trimtab.app.demo.records import Interaction, LearnerCpu, TrainedVersion, read_jsonl
from trimtab.config import TrimtabConfig, load_config
from trimtab.environment import apply_runtime_env
from trimtab.errors import TrimtabError
from trimtab.registry import Registry
from trimtab.simulation.world import World

DURATION_S = 240.0  # the short demo's users: enough for a few rounds and a promotion at the default rate
BATCH_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Run:
    """A finished demo run, as its files record it."""

    directory: Path
    config: TrimtabConfig  # the run's effective config (<run>/config.yaml)
    interactions: list[Interaction]
    trained: list[TrainedVersion]
    learner_cpu: LearnerCpu
    quality: QualityCheck | None  # the run's final check (None: nothing was promoted)
    duration_s: float  # how long the users ran

    @property
    def version(self) -> str:
        """The online version under test: the final check's, else the newest the learner published."""
        if self.quality is not None:
            return self.quality.version
        if not self.trained:
            raise TrimtabError(f"{self.directory}: the learner published no version")
        return self.trained[-1].version

    @property
    def eval_prompts(self) -> int:
        return self.quality.prompts if self.quality is not None else self.config.demo.eval_prompts


@dataclass(frozen=True)
class BatchVersion:
    path: Path
    items: int  # feedback items retrained
    examples: int  # with the anchor set
    cpu_s: float
    wall_s: float


def bench_loop(config: TrimtabConfig, run_dir: Path | None = None, duration_s: float = DURATION_S) -> list[Comparison]:
    console = Console(stderr=True)
    if run_dir is None:
        run_dir = short_demo(config, duration_s, console)
    run = load_run(run_dir)
    fresh = analysis.freshness(run.interactions, run.trained)
    console.print(
        f"bench loop: freshness p50 {_seconds(fresh.p50_s)}, p90 {_seconds(fresh.p90_s)};"
        f" {fresh.reached} of {fresh.accepted} accepted events reached serving"
    )
    version = run.version
    published_s = next(v.published_s for v in run.trained if v.version == version)
    online_cpu = analysis.cpu_at(run.learner_cpu.samples, published_s)
    if online_cpu is None:
        raise TrimtabError(f"{run_dir}: no CPU sample after {version} was published")
    lineage = analysis.lineage_feedback(run.trained)[version]
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-loop-") as scratch:
        console.print(f"bench loop: batch retrain on the {len(lineage)} events {version} was trained on")
        batch = retrain_batch(run, lineage, Path(scratch))
        console.print(f"bench loop: evaluating {version} and the batch version on {run.eval_prompts} prompts")
        gains = evaluate_gains(run, {"online": Registry(run.config.registry.root).path(version), "batch": batch.path})
    batch_delays = batch_freshness(run.interactions, lineage, run.duration_s + batch.wall_s)
    return rows(run, fresh, online_cpu, batch, gains, batch_delays)


def short_demo(config: TrimtabConfig, duration_s: float, console: Console) -> Path:
    """A learner-on demo run, isolated, without the live display; its run directory."""
    from trimtab.app.demo import run_demo

    demo = config.demo.model_copy(
        update={
            "learner": True,
            "live": False,
            "users": config.demo.users.model_copy(update={"duration_s": duration_s}),
        }
    )
    result = run_demo(config.model_copy(update={"demo": demo}), console)
    return result.run_dir


def load_run(run_dir: Path) -> Run:
    versions = json.loads((run_dir / "versions.json").read_text())
    if versions.get("learner_cpu") is None:
        raise TrimtabError(f"{run_dir}: no learner CPU record (learner off, or a run older than this bench)")
    if not (run_dir / FEEDBACK_ARCHIVE).is_file():
        raise TrimtabError(f"{run_dir}: no {FEEDBACK_ARCHIVE} (a run older than this bench)")
    interactions = [Interaction.from_json(row) for row in read_jsonl(run_dir / "interactions.jsonl")]
    config = load_config(run_dir / "config.yaml", environ={})
    return Run(
        directory=run_dir,
        config=config,
        interactions=interactions,
        trained=[TrainedVersion.from_json(v) for v in versions["trained_versions"]],
        learner_cpu=LearnerCpu.from_json(versions["learner_cpu"]),
        quality=QualityCheck(**versions["quality_check"]) if versions["quality_check"] else None,
        duration_s=float(versions["duration_s"]),
    )


def retrain_batch(run: Run, feedback_ids: Set[str], scratch: Path) -> BatchVersion:
    """`bench.batch_retrain` as two torchrun ranks; its process tree's CPU from wait4."""
    ids_file, out_file, registry_root = scratch / "feedback_ids.json", scratch / "batch.json", scratch / "registry"
    ids_file.write_text(json.dumps(sorted(feedback_ids)))
    argv, extra = torchrun_command(
        "bench.batch_retrain", str(run.directory), str(ids_file), str(registry_root), str(out_file)
    )
    process = DemoProcess("batch", argv, scratch / "batch.log", child_env(run.directory / "config.yaml", extra))
    started = time.monotonic()
    process.start()
    code = process.wait(BATCH_TIMEOUT_S)
    wall_s = time.monotonic() - started
    if code != 0 or process.cpu_s is None:
        log = (scratch / "batch.log").read_text()[-3000:]
        raise TrimtabError(f"batch retrain exited {code}:\n{log}")
    result = json.loads(out_file.read_text())
    path = Registry(registry_root).path(result["version"])
    return BatchVersion(path, result["items"], result["examples"], process.cpu_s, wall_s)


def evaluate_gains(run: Run, policies: dict[str, Path]) -> dict[str, float]:
    """Held-out gold-reward gain over the default model, each policy on the final check's prompts."""
    from learner.evaluate import evaluate_versions
    from trimtab.simulation.evaluation import heldout_prompts, messages_of
    from trimtab.simulation.suite import gold_scorer

    config = run.config
    world = World(config.world)
    prompts = messages_of(heldout_prompts(world, run.eval_prompts, seed=config.demo.users.seed))
    evaluations = evaluate_versions(policies, config.model.path, prompts, gold_scorer(world), config.engine)
    return {name: evaluation.reward_gain for name, evaluation in evaluations.items()}


def batch_freshness(interactions: Sequence[Interaction], feedback_ids: Set[str], ready_s: float) -> list[float]:
    """Delays a batch version ready (and served) at `ready_s` gives the accepted events it trained on."""
    return [
        ready_s - i.accepted_at_s
        for i in interactions
        if i.accepted and i.accepted_at_s is not None and i.feedback_id in feedback_ids
    ]


def rows(
    run: Run,
    fresh: analysis.Freshness,
    online_cpu_s: float,
    batch: BatchVersion,
    gains: dict[str, float],
    batch_delays: list[float],
) -> list[Comparison]:
    """The gain row, and the freshness row when some accepted event reached serving through the learner."""
    online_rate = analysis.per_cpu_minute(gains["online"], online_cpu_s)
    batch_rate = analysis.per_cpu_minute(gains["batch"], batch.cpu_s)
    assert online_rate is not None and batch_rate is not None  # both CPU times are positive
    version = analysis.short_version(run.version)
    which = "latest promoted" if run.quality is not None else "none promoted: the newest published"
    results = [
        Comparison(
            name="held-out gold-reward gain over the default model per learner CPU minute",
            unit="r*/CPU-min",
            candidate=f"online ({version}, {which})",
            candidate_value=online_rate,
            baseline="batch retrain from scratch",
            baseline_value=batch_rate,
            notes=(
                f"gain {gains['online']:+.3f} in {online_cpu_s / 60:.1f} CPU min (learner tree until {version} was"
                f" published; {_minutes(run.learner_cpu.total_s)} in all) vs {gains['batch']:+.3f} in"
                f" {batch.cpu_s / 60:.1f} CPU min ({batch.items} events, {batch.examples} examples with anchors);"
                f" {run.eval_prompts} held-out prompts; run {run.directory.name}"
            ),
        )
    ]
    batch_p50, batch_p90 = analysis.percentile(batch_delays, 50), analysis.percentile(batch_delays, 90)
    if fresh.p50_s is not None and fresh.p90_s is not None and batch_p50 is not None and batch_p90 is not None:
        results.insert(
            0,
            Comparison(
                name="feedback-to-policy freshness, p50: acceptance -> first answer by a version trained on it",
                unit="s",
                candidate="online loop",
                candidate_value=fresh.p50_s,
                baseline="batch retrain when the users stop",
                baseline_value=batch_p50,
                higher_is_better=False,
                notes=(
                    f"p90 {fresh.p90_s:.0f} s vs {batch_p90:.0f} s; {fresh.reached} of {fresh.accepted} accepted"
                    f" events reached serving online ({fresh.trained_unserved} trained but not served,"
                    f" {fresh.untrained} not trained); batch: {len(batch_delays)} events, run of"
                    f" {run.duration_s:.0f} s + retrain {batch.wall_s:.0f} s wall"
                ),
            ),
        )
    return results


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _minutes(cpu_s: float | None) -> str:
    return "-" if cpu_s is None else f"{cpu_s / 60:.1f} CPU min"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished learner-on demo run directory (default: run one)")
    parser.add_argument("--duration", type=float, default=DURATION_S, help="the short demo's users, seconds")
    args = parser.parse_args()
    apply_runtime_env()
    try:
        results = bench_loop(simulation_config(), args.run, args.duration)
    except TrimtabError as exc:
        print(f"bench loop: {exc}", file=sys.stderr)
        return 1
    table = write_report(results, Path(__file__).resolve().parent / "results" / "loop")
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
