"""The evaluation suite (`trimtab.suite`): the operator's held-out prompts, anchor demonstrations,
red-team prompts, protected terms and judge."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from trimtab.config.base import Section

FILE_FIELDS = ("heldout", "anchors", "red_team", "protected_terms")


class SuiteConfig(Section):
    """Where the suite comes from. `files` reads the JSONL files below; any other kind is a plug-in of the
    `trimtab.suites` entry-point group (`world`: the simulation, which the demo, tests and benches use)."""

    kind: str = Field(default="files", description="'files', or the name of a suite plug-in ('world').")
    heldout: Path | None = Field(
        default=None, description='JSONL of {"prompt": P}: prompts the reward and KL gates answer (never trained).'
    )
    anchors: Path | None = Field(
        default=None,
        description='JSONL of {"prompt": P, "response": "..."}: demonstrations trained and checked every round.',
    )
    red_team: Path | None = Field(
        default=None, description='JSONL of {"prompt": P, "category": "..."}: the guardrail gate\'s prompts.'
    )
    protected_terms: Path | None = Field(
        default=None,
        description='JSONL of {"term": "...", "kind": "secret" | "blocklist"}: what the output rails stop.',
    )
    judge: str | None = Field(
        default=None,
        description="'module:function' scoring (prompt messages, response) -> float: a verifier or a rubric.",
    )
    judge_reward_version: str | None = Field(
        default=None, description="A reward-model version of the registry that scores answers (instead of judge)."
    )

    @model_validator(mode="after")
    def _one_judge_and_files_only_for_files(self) -> SuiteConfig:
        if self.judge is not None and self.judge_reward_version is not None:
            raise ValueError("give judge or judge_reward_version, not both")
        given = [name for name in FILE_FIELDS if getattr(self, name) is not None]
        if self.kind != "files" and given:
            raise ValueError(f"{given[0]} is read only by kind 'files' (kind is {self.kind!r})")
        return self
