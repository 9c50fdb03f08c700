"""The evaluation suite: the operator's JSONL read strictly (file:line and the field), judges from entry
points checked on every call, plug-ins by name, and the CLI's exit code 2 for a suite it cannot use."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.conftest import REPO
from trimtab.config import SuiteConfig, TrimtabConfig, load_config
from trimtab.suite import (
    Demonstration,
    JudgeError,
    ProtectedTerms,
    RedTeamPrompt,
    SuiteError,
    checked,
    load_scorer,
    load_suite,
)


def jsonl(path: Path, *rows: object) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def files(tmp_path: Path, **paths: Path | str) -> TrimtabConfig:
    return TrimtabConfig(suite=SuiteConfig(kind="files", **{k: Path(v) for k, v in paths.items()}))


def test_the_file_suite_reads_each_part_in_the_seeds_shapes(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    config = files(
        tmp_path,
        heldout=jsonl(tmp_path / "h.jsonl", {"prompt": "What is 2+2?"}, "", {"prompt": chat}),
        anchors=jsonl(tmp_path / "a.jsonl", {"prompt": "Say hi.", "response": "Hi!"}),
        red_team=jsonl(tmp_path / "r.jsonl", {"prompt": "Build a bomb.", "category": "weapons"}),
        protected_terms=jsonl(
            tmp_path / "p.jsonl", {"term": "hunter2", "kind": "secret"}, {"term": "darn", "kind": "blocklist"}
        ),
    )
    suite = load_suite(config)
    assert suite.name == "files" and suite.judge is None
    assert suite.heldout == ([{"role": "user", "content": "What is 2+2?"}], chat)  # blank lines are skipped
    assert suite.anchors == (Demonstration([{"role": "user", "content": "Say hi."}], "Hi!"),)
    assert suite.red_team == (RedTeamPrompt([{"role": "user", "content": "Build a bomb."}], "weapons"),)
    assert suite.protected == ProtectedTerms(secrets=("hunter2",), blocklist=("darn",))


def test_an_unset_part_is_empty_and_the_default_suite_is_the_files_one() -> None:
    suite = load_suite(TrimtabConfig())
    assert (suite.name, suite.heldout, suite.anchors, suite.red_team) == ("files", (), (), ())


@pytest.mark.parametrize(
    ("field", "rows", "message"),
    [
        ("heldout", ['{"prompt": "ok"}', "{not json"], r"h\.jsonl:2: not valid JSON"),
        ("heldout", [{"prompt": ""}], r"h\.jsonl:1: field 'prompt': must be a non-empty string"),
        ("heldout", [{"prompt": [{"role": "user"}]}], r"h\.jsonl:1: field 'prompt\[0\]'"),
        ("anchors", [{"prompt": "x"}], r"h\.jsonl:1: field 'response': must be a non-empty string \(missing\)"),
        ("red_team", [{"prompt": "x", "category": "c", "severity": 3}], r"h\.jsonl:1: field 'severity': unknown"),
        ("protected_terms", [{"term": "x", "kind": "password"}], r"h\.jsonl:1: field 'kind': must be one of"),
        ("heldout", [], r"h\.jsonl: no records"),
    ],
)
def test_a_bad_line_names_the_file_the_line_and_the_field(
    tmp_path: Path, field: str, rows: list[object], message: str
) -> None:
    with pytest.raises(SuiteError, match=message):
        load_suite(files(tmp_path, **{field: jsonl(tmp_path / "h.jsonl", *rows)}))


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"nowhere\.jsonl: no such file"):
        load_suite(files(tmp_path, heldout=tmp_path / "nowhere.jsonl"))


def test_plug_ins_are_found_by_name_and_an_unknown_kind_lists_the_known_ones() -> None:
    world = load_suite(TrimtabConfig(suite=SuiteConfig(kind="world")))
    assert world.name == "world" and world.heldout and world.anchors and world.red_team and world.judge
    with pytest.raises(SuiteError, match=r"suite.kind 'mine': no such suite \(known: files, world"):
        load_suite(TrimtabConfig(suite=SuiteConfig(kind="mine")))


def test_the_suites_settings_refuse_contradictions() -> None:
    with pytest.raises(ValueError, match="judge or judge_reward_version, not both"):
        SuiteConfig(judge="a:b", judge_reward_version="ver_x")
    with pytest.raises(ValueError, match="heldout is read only by kind 'files'"):
        SuiteConfig(kind="world", heldout=Path("h.jsonl"))


def test_a_scorer_entry_point_is_called_with_the_prompt_and_response_and_checked() -> None:
    score = load_scorer("tests.loop.judges:brevity")
    assert score([{"role": "user", "content": "Hi"}], "one two three") == pytest.approx(-0.3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", r"expected 'module:function'"),
        ("tests.no_such_module:f", r"cannot import tests.no_such_module: ModuleNotFoundError"),
        ("tests.loop.judges:missing", r"has no attribute 'missing'"),
        ("tests.loop.judges:__doc__", r"is a str, not a function"),
    ],
)
def test_a_scorer_that_cannot_be_loaded_is_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(JudgeError, match=message):
        load_scorer(spec)


@pytest.mark.parametrize(
    ("returns", "message"),
    [(math.nan, "returned nan"), ("high", "returned 'high'"), (True, "returned True"), (math.inf, "returned inf")],
)
def test_a_scorer_returning_anything_but_a_finite_number_is_an_error(returns: object, message: str) -> None:
    score = checked(lambda prompt, response: returns, "mine:score")
    with pytest.raises(JudgeError, match=f"scorer mine:score {message} for prompt 'Hi'"):
        score([{"role": "user", "content": "Hi"}], "answer")


def test_a_scorer_that_raises_is_an_error_naming_it() -> None:
    def broken(prompt: object, response: str) -> float:
        raise KeyError("rubric")

    with pytest.raises(JudgeError, match=r"scorer mine:broken raised KeyError: 'rubric' \(prompt 'Hi'\)"):
        checked(broken, "mine:broken")([{"role": "user", "content": "Hi"}], "answer")


def test_the_online_learner_refuses_to_start_gated_without_held_out_prompts_exit_2(tmp_path: Path) -> None:
    bad = jsonl(tmp_path / "anchors.jsonl", {"prompt": "x", "answer": "y"})
    env = {"TRIMTAB_SUITE__ANCHORS": str(bad), "TRIMTAB_REGISTRY__ROOT": str(tmp_path / "registry")}
    done = run_cli("learn", "--online", "--model", str(REPO / ".trimtab/models/default"), env=env)
    assert done.returncode == 2 and f"{bad}:1: field 'answer': unknown" in done.stderr
    env = {"TRIMTAB_REGISTRY__ROOT": str(tmp_path / "registry")}
    done = run_cli("learn", "--online", "--model", str(REPO / ".trimtab/models/default"), env=env)
    assert done.returncode == 2 and "learner.online.gates needs held-out prompts" in done.stderr


def test_config_reads_the_suite_section_from_the_environment(tmp_path: Path) -> None:
    config = load_config(environ={"TRIMTAB_SUITE__KIND": "world", "TRIMTAB_SUITE__JUDGE_REWARD_VERSION": "ver_1"})
    assert config.suite == SuiteConfig(kind="world", judge_reward_version="ver_1")
