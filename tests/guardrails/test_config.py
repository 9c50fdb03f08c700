"""The rails configuration: a bad one is refused naming the file and the problem; a running process
reloads a changed one without a restart and keeps its rails when the new one is bad."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guardrails.decisions import Stage
from guardrails.metrics import GuardrailMetrics
from guardrails.policy import GuardrailsConfigError
from guardrails.runtime import Guardrails
from guardrails.semantic import Embedder
from guardrails.service import LiveGuardrails
from tests.conftest import REPO
from tests.guardrails.conftest import copy_config, edit_config
from trimtab.config import load_config
from trimtab.suite import ProtectedTerms


def broken(tmp_path: Path, change: Callable[[Path], None]) -> Path:
    directory = copy_config(tmp_path / "rails")
    change(directory)
    return directory


def set_custom(**values: Any) -> Callable[[Path], None]:
    return lambda directory: edit_config(directory, lambda config: config["custom_data"].update(values))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (set_custom(treshold=0.5), r"config\.yml: custom_data\.treshold: unknown key"),
        (set_custom(pii={"input": "hide"}), r"config\.yml: custom_data\.pii\.input: Input should be 'mask' or 'block'"),
        (set_custom(refusal="no {why}"), r"config\.yml: custom_data\.refusal: .*\{reason\}"),
        (set_custom(input_rails=["pii", "toxicity"]), r"config\.yml: custom_data\.input_rails\.1: Input should be"),
        (set_custom(output_rails=["pii", "pii"]), r"config\.yml: custom_data\.output_rails: .*names a rail twice"),
        (lambda d: (d / "attacks.txt").unlink(), r"attacks\.txt: cannot read example file"),
        (lambda d: (d / "toxic.txt").write_text("# only a comment\n"), r"toxic\.txt: no examples"),
        (lambda d: (d / "config.yml").write_text("rails: [unclosed\n"), r"rails: while parsing|expected"),
        (lambda d: (d / "config.yml").unlink(), r"config\.yml: missing"),
        (
            lambda d: edit_config(d, lambda c: c["rails"]["input"]["flows"].append("jailbrake")),
            r"config\.yml: .*input rail flow `jailbrake` does not exist",
        ),
        (
            lambda d: (d / "extra.co").write_text("define subflow x\n  $y = execute foo(\n  if\n"),
            r"extra\.co",
        ),
        (
            lambda d: (
                (d / "extra.co").write_text(
                    "define subflow spell check\n  $r = execute spellcheck(text=$user_message)\n"
                ),
                edit_config(d, lambda c: c["rails"]["input"]["flows"].append("spell check")),
            ),
            r"flow 'spell check' executes 'spellcheck', which is not an action",
        ),
    ],
    ids=[
        "unknown-key",
        "bad-choice",
        "refusal-format",
        "unknown-rail",
        "rail-twice",
        "no-attacks",
        "empty-examples",
        "bad-yaml",
        "no-config",
        "unknown-flow",
        "colang-syntax",
        "unknown-action",
    ],
)
def test_a_bad_config_is_refused_naming_the_file_and_the_problem(
    tmp_path: Path, embedder: Embedder, protected: ProtectedTerms, change: Callable[[Path], None], message: str
) -> None:
    directory = broken(tmp_path, change)
    with pytest.raises(GuardrailsConfigError, match=message) as refused:
        Guardrails.load(directory, embedder, protected)
    assert str(directory) in str(refused.value)


def test_serve_with_a_bad_rails_config_stops_at_start_up_naming_the_file(tmp_path: Path) -> None:
    directory = broken(tmp_path, set_custom(jailbreak={"threshold": 3}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    env |= {
        "TRIMTAB_GUARDRAILS__ENABLED": "true",
        "TRIMTAB_GUARDRAILS__CONFIG_DIR": str(directory),
        "TRIMTAB_REGISTRY__ROOT": str(tmp_path / "registry"),
        "TRIMTAB_MODEL__PATH": str(tmp_path / "no-model"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "trimtab.app.cli", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2  # a configuration error, like any other
    assert (
        f"{directory}/config.yml: custom_data.jailbreak.threshold: Input should be less than or equal to 1"
        in done.stderr
    )


def test_the_guardrails_section_is_validated_like_every_other() -> None:
    config = load_config(environ={"TRIMTAB_GUARDRAILS__ENABLED": "true", "TRIMTAB_GUARDRAILS__TENANTS": "[a, b]"})
    assert config.guardrails.enabled and config.guardrails.tenants == ("a", "b")
    with pytest.raises(Exception, match=r"guardrails\.feedback_filter: Input should be 'drop' or 'flip'"):
        load_config(environ={"TRIMTAB_GUARDRAILS__FEEDBACK_FILTER": "keep"})


def test_a_changed_config_is_reloaded_and_a_bad_change_keeps_the_old_rails(
    tmp_path: Path, embedder: Embedder, protected: ProtectedTerms
) -> None:
    directory = copy_config(tmp_path / "rails")
    settings = load_config(environ={"TRIMTAB_GUARDRAILS__CONFIG_DIR": str(directory)}).guardrails
    prompt = "Which colour does a blorb have?"

    async def scenario() -> None:
        live = LiveGuardrails(
            settings, Guardrails.load(directory, embedder, protected), embedder, protected, GuardrailMetrics.create()
        )
        assert not (await live.check(Stage.INPUT, prompt)).blocked
        assert not await live.reload_if_changed()  # nothing changed

        fruit = {"name": "fruit", "keywords": ["blorb"]}
        edit_config(directory, lambda c: c["custom_data"]["topics"]["blocked"].append(fruit))
        assert await live.reload_if_changed()
        assert (await live.check(Stage.INPUT, prompt)).reason_code == "topic.fruit"

        edit_config(directory, lambda c: c["custom_data"].update(typo=1))
        assert not await live.reload_if_changed()  # refused: the rails loaded before stay
        assert (await live.check(Stage.INPUT, prompt)).reason_code == "topic.fruit"

        edit_config(directory, lambda c: (c["custom_data"].pop("typo"), c["custom_data"]["topics"].update(blocked=[])))
        assert await live.reload_if_changed()
        assert not (await live.check(Stage.INPUT, prompt)).blocked
        assert live.processes is not None  # reloads start the check processes of the new rails
        await live.processes.close()

    asyncio.run(scenario())
