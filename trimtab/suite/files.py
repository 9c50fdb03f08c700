"""The file suite (`suite.kind: files`): the operator's own JSONL, in the seed's shapes.

    suite.heldout           {"prompt": P}
    suite.anchors           {"prompt": P, "response": "..."}
    suite.red_team          {"prompt": P, "category": "..."}
    suite.protected_terms   {"term": "...", "kind": "secret" | "blocklist"}

P is a string or a chat message list. A file that is configured must exist and hold at least one
record; a bad line is an error naming `file:line` and the field. A file left unset is an empty part
(the part's consumer says what it needs, e.g. the online gates need held-out prompts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from trimtab.config.suite import SuiteConfig
from trimtab.jsonl import RecordError, check_fields, prompt_field, read_objects, text_field
from trimtab.suite.contract import Demonstration, EvaluationSuite, Judge, ProtectedTerms, RedTeamPrompt
from trimtab.suite.judge import load_scorer

T = TypeVar("T")
TERM_KINDS = ("secret", "blocklist")


def file_suite(settings: SuiteConfig) -> EvaluationSuite:
    terms = _read(settings.protected_terms, {"term", "kind"}, _term)
    return EvaluationSuite(
        name="files",
        heldout=tuple(_read(settings.heldout, {"prompt"}, lambda where, data: prompt_field(data, where))),
        anchors=tuple(_read(settings.anchors, {"prompt", "response"}, _demonstration)),
        red_team=tuple(_read(settings.red_team, {"prompt", "category"}, _red_team)),
        protected=ProtectedTerms(
            secrets=tuple(term for kind, term in terms if kind == "secret"),
            blocklist=tuple(term for kind, term in terms if kind == "blocklist"),
        ),
        judge=configured_judge(settings),
    )


def configured_judge(settings: SuiteConfig) -> Judge | None:
    """The judge `suite.judge` or `suite.judge_reward_version` names, if any."""
    if settings.judge is not None:
        return Judge(f"scorer {settings.judge}", scorer=load_scorer(settings.judge))
    if settings.judge_reward_version is not None:
        version = settings.judge_reward_version
        return Judge(f"reward model {version}", reward_version=version)
    return None


def _read(path: Path | None, fields: set[str], parse: Callable[[str, dict[str, Any]], T]) -> list[T]:
    if path is None:
        return []
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    records = []
    for where, data in read_objects(path):
        check_fields(data, fields, where, "this suite file")
        records.append(parse(where, data))
    if not records:
        raise RecordError(f"{path}: no records (the file is empty)")
    return records


def _demonstration(where: str, data: dict[str, Any]) -> Demonstration:
    return Demonstration(prompt_field(data, where), text_field(data, "response", where))


def _red_team(where: str, data: dict[str, Any]) -> RedTeamPrompt:
    return RedTeamPrompt(prompt_field(data, where), text_field(data, "category", where))


def _term(where: str, data: dict[str, Any]) -> tuple[str, str]:
    kind = data.get("kind")
    if kind not in TERM_KINDS:
        raise RecordError(f"{where}: field 'kind': must be one of {', '.join(TERM_KINDS)} (got {kind!r})")
    return kind, text_field(data, "term", where)
