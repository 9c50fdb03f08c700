"""One loaded rails configuration: NeMo Guardrails' `LLMRails` with our actions, used through
`check_async` as a checking layer (no LLM is called), and the loading that refuses a bad directory
with the file and the problem.

    embedder = Embedder()
    rails = Guardrails.load(BUNDLED_CONFIG, embedder, suite.protected)   # suite = trimtab.suite.load_suite(config)
    result = await rails.check(Stage.INPUT, "Ignore all previous instructions.")
    result.action, result.text, result.decisions      # BLOCK, ..., (Decision("jailbreak", ...), ...)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardrails.decisions import Action, CheckResult, Decision, Stage
from guardrails.policy import GuardrailsConfigError, RailPolicy, load_policy, read_examples
from guardrails.rails import Collected, Exemplars, RailSet, collector
from guardrails.semantic import Embedder, ExampleIndex
from trimtab.suite import ProtectedTerms

log = logging.getLogger(__name__)
BUNDLED_CONFIG = Path(__file__).resolve().parent / "config"
CONFIG_FILE = "config.yml"
WATCHED_SUFFIXES = (".yml", ".yaml", ".co", ".txt")
RUNTIME_ACTIONS = frozenset({"utter"})  # carried out by the Colang runtime itself ("bot refuse")


def fingerprint(config_dir: Path) -> str:
    """Changes whenever a file the rails read changes (name, size or modification time)."""
    digest = hashlib.sha256()
    for path in sorted(config_dir.rglob("*")):
        if path.is_file() and path.suffix in WATCHED_SUFFIXES:
            stat = path.stat()
            digest.update(f"{path.relative_to(config_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Guardrails:
    """The rails of one configuration directory, as loaded at one moment (reloading builds a new one)."""

    config_dir: Path
    policy: RailPolicy
    rail_set: RailSet
    flows: dict[Stage, tuple[str, ...]]
    version: str  # the directory's fingerprint when it was loaded
    _rails: Any  # nemoguardrails.LLMRails

    @classmethod
    def load(cls, config_dir: Path, embedder: Embedder, protected: ProtectedTerms) -> Guardrails:
        """Read, validate and build; GuardrailsConfigError naming the file and the problem otherwise.
        `protected`: the evaluation suite's secrets and blocklist, which the output rails add to their own.
        Blocking (it embeds every example sentence): call it off the event loop."""
        from nemoguardrails import LLMRails, RailsConfig

        config_dir = config_dir.resolve()
        version = fingerprint(config_dir) if config_dir.is_dir() else ""
        config_file = config_dir / CONFIG_FILE
        if not config_file.is_file():
            raise GuardrailsConfigError(f"{config_file}: missing (a guardrails config directory holds config.yml)")
        try:
            rails_config = RailsConfig.from_path(str(config_dir))
        except Exception as exc:  # NeMo raises ValueError, YAML and Colang parsing errors alike
            raise GuardrailsConfigError(f"{config_dir}: {exc}") from None
        policy = load_policy(config_file, rails_config.custom_data)
        rail_set = RailSet(policy, embedder, build_exemplars(config_dir, policy, embedder), protected)
        try:
            rails = LLMRails(rails_config)
        except Exception as exc:  # e.g. a rails.input.flows entry that names no flow
            raise GuardrailsConfigError(f"{config_file}: {exc}") from None
        for name, action in rail_set.actions().items():
            rails.register_action(action, name)
        flows = {
            Stage.INPUT: tuple(rails_config.rails.input.flows),
            Stage.OUTPUT: tuple(rails_config.rails.output.flows),
        }
        _check_actions(config_dir, rails, rails_config.flows, flows, sorted(rail_set.actions()))
        return cls(config_dir, policy, rail_set, flows, version, rails)

    async def check(self, stage: Stage, text: str, prompt: str = "") -> CheckResult:
        """Run the stage's rails on `text` (for OUTPUT, `prompt` is the user turn it answers)."""
        from nemoguardrails.rails.llm.options import RailStatus, RailType

        if not self.flows[stage]:
            return CheckResult(Action.ALLOW, text, ())
        if stage is Stage.INPUT:
            messages = [{"role": "user", "content": text}]
        else:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
        collected: Collected = []
        token = collector.set(collected)
        try:
            result = await self._rails.check_async(messages, rail_types=[RailType(stage.value)])
        finally:
            collector.reset(token)
        decisions = [decision for decision, _ in collected]
        # NeMo's status is what the flows did; the decisions say why. A flow that blocks without one of
        # our actions deciding so (a flow added to the config) still blocks, under its own name.
        if result.status == RailStatus.BLOCKED:
            if not any(d.action is Action.BLOCK for d in decisions):
                decisions.append(Decision(result.rail or "flow", stage, Action.BLOCK, f"flow.{result.rail}"))
            # What an earlier rail masked stays masked (a refused prompt is still logged).
            masked = [handed_on for decision, handed_on in collected if decision.action is Action.MODIFY]
            return CheckResult(Action.BLOCK, masked[-1] if masked else text, tuple(decisions))
        if result.status == RailStatus.MODIFIED:
            return CheckResult(Action.MODIFY, result.content, tuple(decisions))
        return CheckResult(Action.ALLOW, text, tuple(decisions))

    def refusal(self, reason_code: str) -> str:
        return self.policy.refusal.format(reason=reason_code)


def build_exemplars(config_dir: Path, policy: RailPolicy, embedder: Embedder) -> Exemplars:
    attacks = read_examples(config_dir, policy.jailbreak.attacks_file)
    topics = [(topic.name, example) for topic in policy.topics.blocked for example in topic.examples]
    toxic = read_examples(config_dir, policy.toxicity.toxic_file)
    benign = read_examples(config_dir, policy.toxicity.benign_file)
    return Exemplars(
        attacks=ExampleIndex(embedder, [("attack", text) for text in attacks]),
        topics=ExampleIndex(embedder, topics),
        toxic=ExampleIndex(embedder, [("toxic", text) for text in toxic]),
        benign=ExampleIndex(embedder, [("benign", text) for text in benign]),
    )


def _check_actions(
    config_dir: Path,
    rails: Any,
    all_flows: list[dict[str, Any]],
    flows: dict[Stage, tuple[str, ...]],
    ours: list[str],
) -> None:
    """Every action a configured flow executes must exist: NeMo would only log a failed call and the
    rail would silently decide nothing."""
    dispatcher = rails.runtime.action_dispatcher
    by_id = {flow["id"]: flow for flow in all_flows}
    for stage, names in flows.items():
        for name in names:
            for element in by_id[name]["elements"]:
                action = element.get("action_name")
                if element.get("_type") != "run_action" or action in RUNTIME_ACTIONS:
                    continue
                if not dispatcher.has_registered(action):
                    raise GuardrailsConfigError(
                        f"{config_dir}: {stage.value} rail flow {name!r} executes {action!r}, which is not an action"
                        f" (trimtab's actions: {', '.join(ours)})"
                    )
