"""`trimtab ops`: the operators' page (versions, gates and decisions; live rates from Prometheus)."""

from __future__ import annotations

from pydantic import Field

from trimtab.config.base import Section


class OpsConfig(Section):
    """Where the ops page listens and what it reads."""

    host: str = Field(default="127.0.0.1", description="Bind address of the ops page.")
    port: int = Field(default=8090, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090",
        description="The Prometheus that scrapes trimtab (deploy/observability/prometheus.yml): the page's charts.",
    )
    window_s: float = Field(default=1800.0, gt=0, description="How far back the charts reach, in seconds.")
    step_s: float = Field(default=15.0, gt=0, description="Seconds between a chart's points.")
    refresh_s: float = Field(default=10.0, gt=0, description="How often the page fetches again.")
    versions_shown: int = Field(default=50, ge=1, description="Newest versions listed on the timeline.")
    events_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest read of the versions topic (its decisions) per refresh."
    )
