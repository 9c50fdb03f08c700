"""The live progress display: running counts kept as interactions finish, drawn as a rich table."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence

from rich.table import Table

from trimtab.app.demo.analysis import percentile, short_version
from trimtab.app.demo.monitor import VersionMonitor
from trimtab.app.demo.records import Interaction
from trimtab.config.demo import FEEDBACK_KINDS

RATE_WINDOW_S = 15.0


class LiveStats:
    """Counts and rolling windows over finished interactions."""

    def __init__(self, window: int) -> None:
        self.interactions = 0
        self.failed = 0
        self.retries = 0
        self.accepted: Counter[str] = Counter()
        self.thumbs_up = 0
        self.thumbs = 0
        self.last_error: str | None = None
        self._finished_at: deque[float] = deque()
        self._rewards: deque[float] = deque(maxlen=window)
        self._latencies: deque[float] = deque(maxlen=window)

    def add(self, interaction: Interaction, now_s: float) -> None:
        self.interactions += 1
        self.failed += interaction.failed
        self.retries += interaction.retries
        if interaction.accepted:
            self.accepted[interaction.kind] += 1
        if interaction.thumbs_up is not None:
            self.thumbs += 1
            self.thumbs_up += interaction.thumbs_up
        if interaction.error:
            self.last_error = interaction.error
        if interaction.latency_s is not None:
            self._latencies.append(interaction.latency_s)
        self._rewards.extend(answer.reward for answer in interaction.answers)
        self._finished_at.append(now_s)

    def rate(self, now_s: float) -> float:
        """Interactions finished per second over the last RATE_WINDOW_S seconds."""
        while self._finished_at and self._finished_at[0] < now_s - RATE_WINDOW_S:
            self._finished_at.popleft()
        return len(self._finished_at) / min(RATE_WINDOW_S, max(now_s, 1.0))

    @property
    def mean_reward(self) -> float | None:
        return sum(self._rewards) / len(self._rewards) if self._rewards else None

    @property
    def answers_in_window(self) -> int:
        return len(self._rewards)

    def latency(self, q: float) -> float | None:
        return percentile(list(self._latencies), q)


def render(
    stats: LiveStats,
    monitor: VersionMonitor,
    elapsed_s: float,
    duration_s: float,
    processes: Sequence[tuple[str, int | None]],
    stopping: bool,
) -> Table:
    """One frame of the live display."""
    table = Table(title="trimtab demo" + ("  [yellow](stopping)[/]" if stopping else ""), show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("elapsed", f"{_clock(elapsed_s)} / {_clock(duration_s)}")
    table.add_row("interactions", f"{stats.interactions}  ({stats.rate(elapsed_s):.2f}/s)")
    accepted = "  ".join(f"{kind} {stats.accepted[kind]}" for kind in FEEDBACK_KINDS if stats.accepted[kind])
    table.add_row("feedback accepted", f"{sum(stats.accepted.values())}  {accepted}  (retries {stats.retries})")
    table.add_row("versions", _versions(monitor))
    swaps = monitor.swap_list()
    last = f", last stall {swaps[-1].stall_ms:.0f} ms" if swaps else ""
    table.add_row("hot swaps", f"{sum(s.ok for s in swaps)} ok, {sum(not s.ok for s in swaps)} failed{last}")
    reward = stats.mean_reward
    table.add_row(
        "gold reward",
        "-" if reward is None else f"{reward:+.3f}  (mean of the last {stats.answers_in_window} answers)",
    )
    up_rate = f"{stats.thumbs_up / stats.thumbs:.1%} of {stats.thumbs}" if stats.thumbs else "-"
    table.add_row("thumbs up", up_rate)
    p50, p95 = stats.latency(50), stats.latency(95)
    table.add_row("latency", "-" if p50 is None or p95 is None else f"p50 {p50:.2f} s  p95 {p95:.2f} s")
    failures = f"[red]{stats.failed}[/]  last: {stats.last_error}" if stats.failed else "0"
    table.add_row("failed requests", failures)
    table.add_row("processes", "  ".join(f"{name} (pid {pid})" for name, pid in processes if pid))
    if monitor.problem:
        table.add_row("monitor", f"[yellow]{monitor.problem}[/]")
    return table


def status_line(stats: LiveStats, monitor: VersionMonitor, elapsed_s: float) -> str:
    """The same, in one line (when the display is off)."""
    pointers = monitor.pointers
    current = short_version(pointers.current) if pointers and pointers.current else "-"
    reward = "-" if stats.mean_reward is None else f"{stats.mean_reward:+.2f}"
    return (
        f"{_clock(elapsed_s)}  {stats.interactions} interactions ({stats.rate(elapsed_s):.2f}/s)"
        f"  accepted {sum(stats.accepted.values())}  failed {stats.failed}  current {current}  r* {reward}"
    )


def _versions(monitor: VersionMonitor) -> str:
    pointers = monitor.pointers
    if pointers is None or pointers.current is None:
        return "-"
    text = f"current {short_version(pointers.current)}{_kl(monitor, pointers.current)}"
    if pointers.canary:
        text += (
            f"  canary {short_version(pointers.canary)} ({pointers.canary_share:.0%}){_kl(monitor, pointers.canary)}"
        )
    return text


def _kl(monitor: VersionMonitor, version: str) -> str:
    kl = monitor.kl(version)
    return "" if kl is None else f" KL {kl:.2f}"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
