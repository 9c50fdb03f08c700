"""The report's PNG plots (matplotlib, Agg backend: no display needed). Each function draws one figure
from shaped data (`trimtab.app.demo.analysis`) and writes it; a version keeps its colour in every plot."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from trimtab.app.demo.analysis import Bin, FailureBin, Point, VersionStats, short_version
from trimtab.app.demo.records import PointerChange, SwapEvent

matplotlib.use("Agg")  # files only, never a window (set before any figure is made)

SIZE = (9.0, 4.0)
DPI = 100


def version_colours(versions: Sequence[str]) -> dict[str, str]:
    """A stable colour per version, in order of first appearance (tab10, then tab20)."""
    palette = [*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20").colors[1::2]]  # type: ignore[attr-defined]
    return {version: to_hex(palette[i % len(palette)]) for i, version in enumerate(versions)}


def over_time_by_version(
    path: Path,
    title: str,
    ylabel: str,
    points: Sequence[Point],
    bins: Mapping[str, Sequence[Bin]],
    colours: Mapping[str, str],
    changes: Sequence[PointerChange] = (),
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Individual values (faint dots) and each version's per-bin mean (line), coloured by version, with
    a dashed line at every change of the current version."""
    figure, axes = _figure(title)
    for version, series in bins.items():
        xs = [t for t, v, _ in points if v == version]
        ys = [y for _, v, y in points if v == version]
        axes.scatter(xs, ys, s=6, alpha=0.15, color=colours[version], linewidths=0)
        axes.plot(
            [b.centre_s for b in series],
            [b.mean for b in series],
            marker="o",
            color=colours[version],
            label=short_version(version),
        )
    _mark_promotions(axes, changes)
    if not points:
        _empty(axes, "no data")
    if ylim:
        axes.set_ylim(*ylim)
    axes.set_xlabel("seconds since the users started")
    axes.set_ylabel(ylabel)
    if bins:
        axes.legend(title="served by", fontsize="small")
    return _save(figure, path)


def reward_vs_kl(path: Path, stats: Sequence[VersionStats], colours: Mapping[str, str]) -> Path:
    """Mean live gold reward against KL to the reference, one point per version with a recorded KL."""
    figure, axes = _figure("gold reward vs KL to the reference, per version")
    measured = [s for s in stats if s.kl is not None]
    for s in measured:
        assert s.kl is not None
        axes.scatter([s.kl], [s.mean_reward], s=60, color=colours[s.version], label=short_version(s.version))
        axes.annotate(
            f"{s.answers} answers",
            (s.kl, s.mean_reward),
            fontsize="small",
            xytext=(5, 5),
            textcoords="offset points",
        )
    if measured:
        axes.legend(fontsize="small")
    else:
        _empty(axes, "no version manifest records kl_to_reference")
    axes.set_xlabel("KL(version || reference), nats per sequence")
    axes.set_ylabel("mean gold reward of its live answers")
    return _save(figure, path)


def swap_stalls(path: Path, swaps: Sequence[SwapEvent], colours: Mapping[str, str], duration_s: float) -> Path:
    """Each hot swap's stall (ms) at the time it happened; failed swaps as red crosses."""
    figure, axes = _figure("hot swaps: generation stall per swap")
    for swap in swaps:
        if swap.ok:
            colour = colours.get(swap.to_version, "grey")
            axes.vlines(swap.at_s, 0, swap.stall_ms, color=colour)
            axes.scatter([swap.at_s], [swap.stall_ms], color=colour, zorder=3)
            axes.annotate(
                short_version(swap.to_version),
                (swap.at_s, swap.stall_ms),
                fontsize="x-small",
                xytext=(3, 3),
                textcoords="offset points",
            )
        else:
            axes.scatter([swap.at_s], [0], marker="x", color="red", s=60, zorder=3)
    if not swaps:
        _empty(axes, "no hot swaps during the run")
    axes.set_ylim(bottom=0)
    axes.set_xlim(0, max([duration_s, *(swap.at_s for swap in swaps)]))
    axes.set_xlabel("seconds since the users started")
    axes.set_ylabel("stall, ms")
    return _save(figure, path)


def latency(path: Path, latencies: Sequence[tuple[float, float]]) -> Path:
    """Generate latency over time (left) and its histogram (right)."""
    figure, (over_time, histogram) = plt.subplots(1, 2, figsize=SIZE, dpi=DPI, width_ratios=(2, 1))
    figure.suptitle("Generate latency (successful requests)")
    if latencies:
        over_time.scatter([t for t, _ in latencies], [s for _, s in latencies], s=6, alpha=0.4)
        histogram.hist([s for _, s in latencies], bins=40)
    else:
        _empty(over_time, "no successful requests")
    over_time.set_xlabel("seconds since the users started")
    over_time.set_ylabel("latency, s")
    histogram.set_xlabel("latency, s")
    histogram.set_ylabel("requests")
    return _save(figure, path)


def failures(path: Path, bins: Sequence[FailureBin], bin_s: float) -> Path:
    """Requests and failed requests per time bin."""
    figure, axes = _figure("requests and failed requests over time")
    starts = [b.start_s for b in bins]
    axes.bar(
        starts,
        [b.requests for b in bins],
        width=bin_s,
        align="edge",
        color="#c9d7e8",
        edgecolor="white",
        label="requests",
    )
    axes.bar(starts, [b.failed for b in bins], width=bin_s, align="edge", color="#d62728", label="failed")
    axes.set_xlabel("seconds since the users started")
    axes.set_ylabel(f"per {bin_s:g} s")
    axes.legend(fontsize="small", title=f"{sum(b.failed for b in bins)} failed in all")
    return _save(figure, path)


def _figure(title: str) -> tuple[Figure, Axes]:
    figure, axes = plt.subplots(figsize=SIZE, dpi=DPI)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    return figure, axes


def _mark_promotions(axes: Axes, changes: Sequence[PointerChange]) -> None:
    for before, after in itertools.pairwise(changes):
        if after.current != before.current:
            axes.axvline(after.at_s, color="black", linestyle="--", linewidth=0.8, alpha=0.6)


def _empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="grey")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return path
