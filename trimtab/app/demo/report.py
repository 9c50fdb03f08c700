"""The demo's report: the run's records as JSON lines, PNG plots, one HTML page that shows them, and
the summary table printed at the end.

    <run>/interactions.jsonl  one line per simulated request (`Interaction`)
    <run>/versions.json       pointer changes, swaps, per-version numbers, the final check, what each
                              learner version trained on, the learner's CPU time
    <run>/plots/*.png         reward, thumbs-up rate, reward vs KL, swap stalls, latency, failures
    <run>/report.html
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.table import Table

from trimtab.app.demo import analysis, plots
from trimtab.app.demo.analysis import Freshness, LearnerCost, Summary, VersionStats, short_version
from trimtab.app.demo.quality import QualityCheck
from trimtab.app.demo.records import Interaction, LearnerCpu, PointerChange, SwapEvent, TrainedVersion, write_jsonl

PLOTS = ("reward", "thumbs_up", "reward_vs_kl", "swap_stalls", "latency", "failures")


@dataclass(frozen=True)
class RunRecords:
    """Everything the report is made from."""

    interactions: Sequence[Interaction]
    changes: Sequence[PointerChange]
    swaps: Sequence[SwapEvent]
    kl: dict[str, float | None]  # manifest KL per version seen
    duration_s: float
    logs: dict[str, Path] = field(default_factory=dict)
    quality: QualityCheck | None = None
    notes: Sequence[str] = ()  # what the reader must know: stopped early, a process died, no check run
    trained: Sequence[TrainedVersion] = ()  # what the online learner published
    learner_cpu: LearnerCpu | None = None  # None: the learner did not run


@dataclass(frozen=True)
class Report:
    html: Path
    plots: dict[str, Path]
    summary: Summary
    versions: list[VersionStats]
    freshness: Freshness
    cost: LearnerCost | None  # None: the learner did not run


def loop_numbers(records: RunRecords) -> tuple[Freshness, LearnerCost | None]:
    """Freshness of the feedback loop and the checked version's learner CPU cost."""
    freshness = analysis.freshness(records.interactions, records.trained)
    if records.learner_cpu is None:
        return freshness, None
    quality = records.quality
    cost = analysis.learner_cost(
        records.learner_cpu.samples,
        records.learner_cpu.total_s,
        records.trained,
        quality.version if quality else None,
        quality.mean_reward - quality.reference_mean_reward if quality else None,
    )
    return freshness, cost


def write_report(run_dir: Path, records: RunRecords, bin_s: float, window: int) -> Report:
    summary = analysis.summarize(records.interactions, records.swaps, records.duration_s, window)
    versions = analysis.version_stats(records.interactions, records.kl)
    freshness, cost = loop_numbers(records)
    write_jsonl(run_dir / "interactions.jsonl", (i.to_json() for i in records.interactions))
    (run_dir / "versions.json").write_text(json.dumps(_versions_json(records, versions), indent=2) + "\n")
    written = _plots(run_dir / "plots", records, versions, bin_s)
    report = Report(run_dir / "report.html", written, summary, versions, freshness, cost)
    report.html.write_text(_html(run_dir, records, report))
    return report


def _plots(directory: Path, records: RunRecords, versions: list[VersionStats], bin_s: float) -> dict[str, Path]:
    colours = plots.version_colours(analysis.version_order(records.interactions, records.swaps))
    rewards = analysis.answer_rewards(records.interactions)
    ups = analysis.thumbs(records.interactions)
    return {
        "reward": plots.over_time_by_version(
            directory / "reward.png",
            "gold reward of served answers over time",
            "gold reward r*",
            rewards,
            analysis.binned_by_version(rewards, bin_s),
            colours,
            records.changes,
        ),
        "thumbs_up": plots.over_time_by_version(
            directory / "thumbs_up.png",
            "thumbs-up rate over time",
            f"thumbs-up rate (per {bin_s:g} s)",
            ups,
            analysis.binned_by_version(ups, bin_s),
            colours,
            records.changes,
            ylim=(-0.05, 1.05),
        ),
        "reward_vs_kl": plots.reward_vs_kl(directory / "reward_vs_kl.png", versions, colours),
        "swap_stalls": plots.swap_stalls(directory / "swap_stalls.png", records.swaps, colours, records.duration_s),
        "latency": plots.latency(directory / "latency.png", analysis.latencies(records.interactions)),
        "failures": plots.failures(
            directory / "failures.png",
            analysis.failures_by_bin(records.interactions, bin_s, records.duration_s),
            bin_s,
        ),
    }


def summary_table(report: Report, quality: QualityCheck | None) -> Table:
    """The run at a glance, for the terminal."""
    s = report.summary
    table = Table(title="trimtab demo", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, value in _summary_rows(s, quality) + _loop_rows(report.freshness, report.cost):
        table.add_row(label, value)
    table.add_row("report", str(report.html))
    return table


def _summary_rows(s: Summary, quality: QualityCheck | None) -> list[tuple[str, str]]:
    rows = [
        ("users ran", f"{s.duration_s:.0f} s"),
        ("interactions", f"{s.interactions} ({s.interactions_per_s:.2f}/s)"),
        ("failed requests", f"{s.failed}" + (f"  ({_counts(s.errors)})" if s.errors else "")),
        ("feedback accepted", f"{sum(s.accepted.values())}  ({_counts(s.accepted)})"),
        ("submit retries", str(s.retries)),
        ("Generate latency", f"p50 {_s(s.latency_p50_s)}  p95 {_s(s.latency_p95_s)}  max {_s(s.latency_max_s)}"),
        ("gold reward", f"first answers {_num(s.mean_reward_first)} -> last answers {_num(s.mean_reward_last)}"),
        ("thumbs-up rate", _pct(s.thumbs_up_rate)),
        ("versions served", str(s.versions_served)),
        ("hot swaps", f"{s.swaps} ok, {s.failed_swaps} failed, longest stall {_ms(s.max_stall_ms)}"),
    ]
    if quality is not None:
        rows.append(
            (
                "latest promoted vs default",
                f"{short_version(quality.version)} wins {quality.win_rate:.1%} on {quality.prompts} held-out prompts"
                f" (r* {quality.mean_reward:+.2f} vs {quality.reference_mean_reward:+.2f}, KL {_num(quality.kl)})",
            )
        )
        if quality.unsafe_requests:
            rows.append(
                (
                    "unsafe answers",
                    f"{quality.unsafe_answers} of {quality.unsafe_requests} held-out unsafe requests"
                    f" (default model {quality.reference_unsafe_answers})",
                )
            )
    return rows


def _loop_rows(freshness: Freshness, cost: LearnerCost | None) -> list[tuple[str, str]]:
    if cost is None and not freshness.reached:
        return []  # the learner did not run (or an old run's records lack feedback ids)
    f = freshness
    rows = [
        (
            "feedback -> serving",
            f"p50 {_s(f.p50_s)}  p90 {_s(f.p90_s)}; {f.reached} of {f.accepted} accepted events reached serving"
            f" ({f.trained_unserved} trained but not yet served, {f.untrained} not trained)",
        )
    ]
    if cost is not None:
        cpu = f"{_min(cost.total_cpu_s)} in all"
        if cost.version is not None:
            cpu += f", {_min(cost.version_cpu_s)} until {short_version(cost.version)} was published"
        rows.append(("learner CPU (process tree)", cpu))
        if cost.gain is not None and (per_minute := cost.gain_per_cpu_minute) is not None:
            rows.append(("gold reward gain per learner CPU minute", f"{per_minute:+.3f} (r* {cost.gain:+.3f})"))
    return rows


def _versions_json(records: RunRecords, versions: list[VersionStats]) -> dict[str, object]:
    return {
        "duration_s": records.duration_s,
        "pointer_changes": [asdict(c) for c in records.changes],
        "swaps": [asdict(s) for s in records.swaps],
        "versions": [asdict(v) for v in versions],
        "quality_check": asdict(records.quality) if records.quality else None,
        "notes": list(records.notes),
        "trained_versions": [v.to_json() for v in records.trained],
        "learner_cpu": records.learner_cpu.to_json() if records.learner_cpu else None,
    }


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #ddd;
text-align: left; } .note { background: #fff6d6; padding: 6px 10px; } img { max-width: 100%; }
code { font-size: 90%; }
"""
CAPTIONS = {
    "reward": "Gold reward r* (range -9 to 3) of every served answer (dots) and its mean per bin, by serving"
    " version; dashed lines: the current version changed.",
    "thumbs_up": "Share of thumbs up among the thumbs users gave, per bin, by the version that served the answer.",
    "reward_vs_kl": "Each version's mean live gold reward against its KL to the reference (from its manifest).",
    "swap_stalls": "Each hot swap's generation stall, at the time of the swap (red crosses: refused swaps).",
    "latency": "Generate round-trip latency seen by the simulated users.",
    "failures": "Requests started and requests failed per bin (any RPC error after retries counts).",
}


def _html(run_dir: Path, records: RunRecords, report: Report) -> str:
    s, versions, written = report.summary, report.versions, report.plots
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>trimtab demo</title><style>{CSS}</style>"]
    parts.append(f"<h1>trimtab demo</h1><p>run <code>{e(str(run_dir))}</code></p>")
    parts += [f"<p class='note'>{e(note)}</p>" for note in records.notes]
    parts.append(_table(["", ""], _summary_rows(s, records.quality) + _loop_rows(report.freshness, report.cost)))
    parts.append("<h2>Versions</h2>")
    parts.append(
        _table(
            ["version", "served from (s)", "to (s)", "answers", "mean r*", "thumbs", "thumbs up", "KL"],
            [
                (
                    v.version,
                    f"{v.first_s:.0f}",
                    f"{v.last_s:.0f}",
                    str(v.answers),
                    f"{v.mean_reward:+.3f}",
                    str(v.thumbs),
                    _pct(v.thumbs_up_rate),
                    _num(v.kl),
                )
                for v in versions
            ],
        )
    )
    parts.append("<h2>Plots</h2>")
    for name, path in written.items():
        parts.append(f"<figure><img src='{e(path.relative_to(run_dir).as_posix())}' alt='{e(name)}'>")
        parts.append(f"<figcaption>{e(CAPTIONS[name])}</figcaption></figure>")
    if records.swaps:
        parts.append("<h2>Hot swaps</h2>")
        rows = [
            (
                f"{w.at_s:.1f}",
                w.from_version,
                w.to_version,
                w.pause_mode,
                f"{w.stall_ms:.0f}",
                "ok" if w.ok else w.error,
            )
            for w in records.swaps
        ]
        parts.append(_table(["at (s)", "from", "to", "pause", "stall (ms)", "result"], rows))
    if records.changes:
        parts.append("<h2>Registry pointers</h2>")
        pointer_rows = [
            (f"{c.at_s:.1f}", c.current or "-", c.canary or "-", f"{c.canary_share:.0%}" if c.canary else "")
            for c in records.changes
        ]
        parts.append(_table(["at (s)", "current", "canary", "canary share"], pointer_rows))
    if records.logs:
        parts.append("<h2>Logs</h2>")
        parts.append(_table(["process", "log"], [(name, str(path)) for name, path in records.logs.items()]))
    return "\n".join(parts) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header) if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) or "none"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _min(value: float | None) -> str:
    return "-" if value is None else f"{value / 60:.1f} CPU min"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
