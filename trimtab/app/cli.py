"""The `trimtab` command: one entry point for the local stack, the config, the default model, serving,
feedback, offline learning, the registry's versions and the demo.

Heavy imports (torch, vLLM) happen inside the commands that need them, so `trimtab status` and
`trimtab config show` answer in well under a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from rich.console import Console

from trimtab.config import ConfigError, TrimtabConfig, load_config
from trimtab.config.learner import ALGORITHMS
from trimtab.config.rl import RL_ALGORITHMS
from trimtab.environment import apply_runtime_env
from trimtab.errors import TrimtabError

# soft_wrap: a progress line stays one line in a log file or a pipe (rich wraps at 80 columns there).
console = Console(stderr=True, highlight=False, soft_wrap=True)


def cmd_up(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.app.stack import up

    up(config, report=console.print)
    console.print("[green]stack ready[/]")
    return 0


def cmd_down(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.app.stack import down

    stopped = down(config)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing started by trimtab up is running")
    return 0


def cmd_status(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.app.stack import status

    states = status(config)
    for state in states:
        console.print(f"{state.name:<7} {state.address:<28} {state.describe()}")
    return 0 if all(state.state != "down" for state in states) else 3


def cmd_config_show(config: TrimtabConfig, args: argparse.Namespace) -> int:
    data = config.model_dump(mode="json")
    print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def cmd_model_build(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.simulation.default_model import build_default_model

    build_default_model(config, force=args.force, report=console.print)
    return 0


def cmd_model_import(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.app.model_import import default_target, import_model

    output = args.output or default_target(args.source)
    cache = config.model.build_cache.expanduser() if config.model.build_cache else None
    target = import_model(args.source, output, cache=cache, force=args.force, report=console.print)
    print(target)  # the one line on stdout, for a script to capture; progress goes to stderr
    return 0


def cmd_demo(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.app.demo import run_demo

    demo = config.demo.model_copy(update={"learner": config.demo.learner and not args.no_learner})
    if args.duration is not None:
        demo = demo.model_copy(update={"users": demo.users.model_copy(update={"duration_s": args.duration})})
    result = run_demo(config.model_copy(update={"demo": demo}), console)
    if result.failed_requests:
        console.print(f"[red]{result.failed_requests} requests failed[/]: see {result.report}")
    return 130 if result.interrupted else 1 if result.failed_requests else 0


def cmd_serve(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from serving.server import run

    return run(config)


def cmd_route(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from serving.router.server import run

    return run(config)


def cmd_learn(config: TrimtabConfig, args: argparse.Namespace) -> int:
    if args.online:
        return _learn_online(config, args)
    if args.algo in RL_ALGORITHMS:
        return _learn_rl(config, args)
    if args.prompts or args.reward:
        raise TrimtabError(
            f"--prompts and --reward are for {', '.join(RL_ALGORITHMS)}; --algo {args.algo} takes --data"
        )
    if args.algo is None or args.data is None or args.model is None:
        raise TrimtabError("trimtab learn needs --algo, --data and --model (or --online)")
    from learner.offline import LearnRequest, run_learn

    request = LearnRequest(args.algo, args.data, args.model, args.steps, args.checkpoint_dir)
    result = run_learn(config, request, console)
    if result.version_id is not None:  # rank 0 only: one line a script can capture
        print(result.version_id)
    return 0


def _learn_rl(config: TrimtabConfig, args: argparse.Namespace) -> int:
    if args.prompts is None or args.reward is None or args.model is None or args.data is not None:
        raise TrimtabError(f"trimtab learn --algo {args.algo} needs --prompts, --reward and --model (not --data)")
    from learner.rl.loop import RLRequest, run_rl

    steps = args.steps or config.learner.rl.steps
    request = RLRequest(args.algo, args.prompts, args.reward, args.model, steps, args.checkpoint_dir)
    result = run_rl(config, request, console)
    if result.version_id is not None:  # rank 0 only: one line a script can capture
        print(result.version_id)
    return 0


def _learn_online(config: TrimtabConfig, args: argparse.Namespace) -> int:
    if args.algo or args.data:
        raise TrimtabError("--online trains on the feedback topic with learner.online.mix: drop --algo and --data")
    from learner.online.suite_check import check_suite
    from trimtab.suite import load_suite

    check_suite(config, load_suite(config))  # a suite the gates cannot use: refused before torch loads
    from learner.online.loop import OnlineRequest, run_online

    memory = run_online(config, OnlineRequest(args.model or config.model.path), console)
    console.print(f"online learner stopped after {memory.rounds} rounds, {memory.trained} feedback items trained")
    return 0


def cmd_feedback(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from feedback.server import run

    return run(config)


def cmd_reward(config: TrimtabConfig, args: argparse.Namespace) -> int:
    version = args.version or config.reward_service.version
    if version is None:
        raise TrimtabError("trimtab reward needs a reward version: --version ID (or reward_service.version)")
    from learner.reward_service import run

    return run(config, version)


def cmd_lineage(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.app.lineage import run

    return run(config, args.id, args.json)


def cmd_ops(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.app.ops.server import run

    return run(config)


def cmd_versions(config: TrimtabConfig, args: argparse.Namespace) -> int:
    from trimtab.registry import commands

    report = print
    match args.action:
        case "list":
            commands.list_versions(config, report)
        case "show":
            commands.show_version(config, _required(args.version, "show"), report)
        case "publish":
            source = Path(_required(args.version, "publish"))
            commands.publish_version(config, source, args.parent, args.algorithm, args.base, report)
        case "promote":
            commands.promote_version(config, _required(args.version, "promote"), report)
        case "canary":
            commands.canary_version(config, _required(args.version, "canary"), args.share, report)
        case "rollback":
            commands.rollback_version(config, args.version, report)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def _required(value: str | None, action: str) -> str:
    if not value:
        raise TrimtabError(f"versions {action}: give a {'directory' if action == 'publish' else 'version id'}")
    return value


def _add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`trimtab model build` and `trimtab model import SOURCE`."""
    model_help = "build the default model, or import your own"
    model = commands.add_parser("model", help=model_help, description=model_help)
    model_actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    build_help = "build the tiny default model if it is missing or stale"
    build = model_actions.add_parser("build", help=build_help, description=build_help)
    build.set_defaults(handler=cmd_model_build)
    build.add_argument("--force", action="store_true", help="rebuild even if the cached build matches its recipe")
    import_help = "a .gguf file (dequantised to float32) or a Hugging Face directory into a cached HF directory"
    imported = model_actions.add_parser("import", help=import_help, description=import_help)
    imported.set_defaults(handler=cmd_model_import)
    imported.add_argument("source", type=Path, metavar="SOURCE", help="a .gguf file or a Hugging Face model directory")
    imported.add_argument(
        "--output", type=Path, metavar="DIR", help="default: .trimtab/models/<SOURCE's name, lowercased>"
    )
    imported.add_argument("--force", action="store_true", help="import again even if the cached import matches")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trimtab", description="Align a language model while it serves.")
    parser.add_argument(
        "--config", type=Path, help="YAML config file (default: $TRIMTAB_CONFIG, else ./trimtab.yaml if present)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[TrimtabConfig, argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    add("up", cmd_up, "start the local broker and Redis (where none answers) and create the topics")
    add("down", cmd_down, "stop what `trimtab up` started")
    add("status", cmd_status, "show each service of the stack (exit 3 if any is down)")
    show = add("config", cmd_config_show, "print the effective configuration")
    show.add_argument("action", choices=["show"], help="what to do with the config")
    show.add_argument("--json", action="store_true", help="JSON instead of YAML")
    _add_model_commands(commands)
    add("serve", cmd_serve, "serve the model over gRPC (InferenceService, AdminService) until SIGTERM")
    add("route", cmd_route, "send each user to the current or the full-weight canary replicas until SIGTERM")
    add("feedback", cmd_feedback, "take feedback over gRPC and HTTP/JSON (FeedbackService) until SIGTERM")
    reward = add("reward", cmd_reward, "serve a reward model over gRPC (RewardService.Score) until SIGTERM")
    reward.add_argument("--version", help="the reward version of the registry to serve (reward_service.version)")
    versions = add("versions", cmd_versions, "the model registry: list, show, publish, promote, canary, rollback")
    versions.add_argument("action", choices=["list", "show", "publish", "promote", "canary", "rollback"])
    versions.add_argument("version", nargs="?", help="version id (a directory for publish)")
    versions.add_argument("--share", type=float, default=0.1, help="canary: share of users (0-1]")
    versions.add_argument("--parent", help="publish: the version it was trained from")
    versions.add_argument("--base", help="publish: for a LoRA adapter, the full version it applies to")
    versions.add_argument("--algorithm", default="import", help="publish: how it was made")
    lineage = add("lineage", cmd_lineage, "where a response, a feedback or a version came from and what it went into")
    lineage.add_argument("id", metavar="ID", help="a response id (resp_...), a version id (ver_...) or a feedback id")
    lineage.add_argument("--json", action="store_true", help="JSON instead of lines")
    add("ops", cmd_ops, "the operators' page: versions, gates and decisions, live charts from Prometheus (config: ops)")
    learn = add("learn", cmd_learn, "train on a JSONL file (or live feedback: --online) and publish versions")
    learn.add_argument("--online", action="store_true", help="consume the feedback topic continuously (learner.online)")
    learn.add_argument("--algo", choices=(*ALGORITHMS, *RL_ALGORITHMS), help="the training algorithm (offline)")
    learn.add_argument("--data", type=Path, help="training examples, JSONL in the algorithm's format (offline)")
    learn.add_argument("--prompts", type=Path, help='RL: prompts to sample answers to, JSONL of {"prompt": P}')
    learn.add_argument(
        "--reward", help="RL: what scores the answers: a reward-model version id, or 'module:function' (a scorer)"
    )
    learn.add_argument(
        "--model", type=Path, help="Hugging Face causal-LM directory to start from (--online: model.path)"
    )
    # Also accepted after the subcommand, as `trimtab learn ... --config learner.yaml` reads naturally.
    learn.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="YAML config file")
    learn.add_argument(
        "--steps",
        type=_positive_int,
        help="optimiser steps (default: learner.train.epochs over the data; RL: learner.rl.steps rollout steps)",
    )
    learn.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="checkpoint here (learner.checkpoint.every_steps) and resume the same run from its newest checkpoint",
    )
    demo = add("demo", cmd_demo, "the closed loop with simulated users, a live display and a report (config: demo)")
    demo.add_argument("--no-learner", action="store_true", help="serving and feedback only (demo.learner: false)")
    demo.add_argument("--duration", type=_positive_float, help="seconds of simulated users (demo.users.duration_s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    apply_runtime_env()
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"trimtab: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.handler(config, args))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # found once a command reads what the config names (a suite file, a judge)
        print(f"trimtab: {exc}", file=sys.stderr)
        return 2
    except TrimtabError as exc:
        print(f"trimtab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
