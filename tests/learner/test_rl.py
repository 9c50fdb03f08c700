"""RL on the policy's own samples, for real: the default model, its rollouts from a long-lived vLLM engine
refitted after every update, the world's gold reward as a verifiable reward (a scorer entry point).
PPO (GRPO and RLOO too, in `make test-long`) raises the reward with the KL to the starting policy
bounded; two ranks give one rank's curve, and do so across a SIGKILL and a resume;
a bad --reward is a clear error. Each run is a handful of steps (about a minute with the engine's start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.process_tree import kill_tree
from trimtab.config import TrimtabConfig
from trimtab.registry import Registry
from trimtab.simulation.world import Split, default_world

pytestmark = pytest.mark.integration
GOLD = "trimtab.simulation.suite:gold_reward"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training prompts of the world, and the run settings every test shares."""
    work = tmp_path_factory.mktemp("rl")
    prompts = default_world().sample_prompts(256, seed=11, split=Split.TRAIN)
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in prompts))
    return work


def settings(workdir: Path, run: str, **more: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")}
    return env | {
        "TRIMTAB_REGISTRY__ROOT": str(workdir / run / "registry"),
        "TRIMTAB_LEARNER__OPTIM__LR": "3e-4",
        "TRIMTAB_LEARNER__TRAIN__MICRO_BATCH_SIZE": "8",
        "TRIMTAB_LEARNER__LOG_EVERY_STEPS": "1",
        "TRIMTAB_LEARNER__RL__ROLLOUT__PROMPTS_PER_STEP": "8",
        "TRIMTAB_LEARNER__RL__ROLLOUT__GROUP_SIZE": "4",
        "TRIMTAB_LEARNER__RL__ROLLOUT__MAX_TOKENS": "48",
        **{f"TRIMTAB_{key.upper()}": value for key, value in more.items()},
    }


def learn_command(workdir: Path, algorithm: str, steps: int, *, ranks: int = 1, reward: str = GOLD) -> list[str]:
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [*launcher, "-m", "trimtab.app.cli", "learn", "--algo", algorithm, "--steps", str(steps)]
    command += ["--prompts", str(workdir / "prompts.jsonl"), "--reward", reward]
    return [*command, "--model", str(REPO / ".trimtab/models/default")]


def learn(
    workdir: Path, run: str, algorithm: str, steps: int, *, ranks: int = 1, reward: str = GOLD, **more: str
) -> subprocess.CompletedProcess[str]:
    command = learn_command(workdir, algorithm, steps, ranks=ranks, reward=reward)
    env = settings(workdir, run, **more) | ({"OMP_NUM_THREADS": "1"} if ranks > 1 else {})
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def curve(workdir: Path, run: str, version_id: str) -> list[dict[str, float]]:
    version = Registry(workdir / run / "registry").path(version_id)
    return [json.loads(line) for line in (version / "train_metrics.jsonl").read_text().splitlines()]


def version_of(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


# PPO (a critic, GAE, clipping) in `make test`; GRPO and RLOO, whose paths PPO's run and the GRPO runs below
# also take, in `make test-long`.
LONG = pytest.mark.long


@pytest.mark.parametrize(
    ("algorithm", "steps"), [pytest.param("grpo", 16, marks=LONG), pytest.param("rloo", 16, marks=LONG), ("ppo", 16)]
)
def test_each_algorithm_raises_the_gold_reward_with_the_kl_bounded(
    default_model_config: TrimtabConfig, workdir: Path, algorithm: str, steps: int
) -> None:
    done = learn(workdir, algorithm, algorithm, steps)
    version_id = version_of(done)
    steps_seen = curve(workdir, algorithm, version_id)
    first = sum(s["score_mean"] for s in steps_seen[:3]) / 3
    last = sum(s["score_mean"] for s in steps_seen[-3:]) / 3
    print(f"\n{algorithm}: gold reward {first:+.2f} -> {last:+.2f}; " + done.stderr[-600:])
    assert last > first + 0.2, [round(s["score_mean"], 2) for s in steps_seen]
    assert max(s["kl_per_sequence"] for s in steps_seen) < 10.0
    # The engine samples what the trainer computes: refits carry the weights, the log-probs agree.
    assert max(s["engine_logp_drift_mean"] for s in steps_seen) < 1e-3
    manifest = Registry(workdir / algorithm / "registry").get(version_id)
    assert manifest.algorithm == algorithm and manifest.config["reward"] == f"scorer {GOLD}"


# In `make test-long`: the online learner's RL steps (tests/learner/test_online_rl.py) take the same path
# on its adapter policy (the reference with the adapter off, the engine refitted with each new adapter).
@LONG
def test_lora_trains_an_adapter_against_the_base_with_the_adapter_off(
    default_model_config: TrimtabConfig, workdir: Path
) -> None:
    """The reference is the actor with its adapter off (no second copy); the engine serves each new adapter."""
    version_id = version_of(learn(workdir, "lora", "grpo", 3, learner__lora__enabled="true"))
    steps_seen = curve(workdir, "lora", version_id)
    # A fresh adapter (B = 0) is the base: the two passes agree up to float rounding (CPU GEMMs may sum in
    # another order from one call to the next: 1e-6 nats per sequence seen); after an update it moves far more.
    assert abs(steps_seen[0]["kl_per_sequence"]) < 1e-5
    assert abs(steps_seen[-1]["kl_per_sequence"]) > 1e-4
    assert max(s["engine_logp_drift_mean"] for s in steps_seen) < 1e-3  # each refit loaded the new adapter
    registry = Registry(workdir / "lora" / "registry")
    manifest = registry.get(version_id)
    assert manifest.kind == "lora" and manifest.base == registry.import_once(REPO / ".trimtab/models/default").id


@pytest.fixture(scope="module")
def whole(default_model_config: TrimtabConfig, workdir: Path) -> list[dict[str, float]]:
    """An uninterrupted 4-step GRPO run on one rank: the curve the others must reproduce."""
    return curve(workdir, "whole", version_of(learn(workdir, "whole", "grpo", 4)))


def test_a_two_rank_run_killed_mid_way_resumes_onto_the_one_rank_curve(
    whole: list[dict[str, float]], workdir: Path
) -> None:
    """Two claims on one pair of runs (each run starts a rollout engine): two ranks compute what one does,
    and a run SIGKILLed after a checkpoint resumes onto the curve it would have drawn."""
    checkpoints = workdir / "killed" / "checkpoints"
    more = {"learner__checkpoint__directory": str(checkpoints), "learner__checkpoint__every_steps": "1"}
    command = learn_command(workdir, "grpo", 4, ranks=2)
    env = settings(workdir, "killed", **more) | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (checkpoints / "step-00000002" / "state.json").is_file() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after step 2"
        time.sleep(0.5)
    assert process.poll() is None, f"the run ended (exit {process.returncode}) before it could be killed"
    kill_tree(process.pid)  # torchrun, both ranks and rank 0's rollout engine, mid-run
    process.wait()
    resumed = learn(workdir, "killed", "grpo", 4, ranks=2, **more)
    assert "resuming after step 2" in resumed.stderr, resumed.stderr[-3000:]
    assert_same_curve(whole, curve(workdir, "killed", version_of(resumed)))


def assert_same_curve(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert [s["step"] for s in a] == [s["step"] for s in b]
    for x, y in zip(a, b, strict=True):
        assert x["score_mean"] == pytest.approx(y["score_mean"], abs=1e-6), (x, y)
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-4), (x, y)
        assert x["kl_per_sequence"] == pytest.approx(y["kl_per_sequence"], abs=1e-4), (x, y)


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (
            "ver_0000000000000000000000000",
            "--reward ver_0000000000000000000000000: neither 'module:function' nor a version",
        ),
        ("tests.learner.rl_judges:raises", "scorer tests.learner.rl_judges:raises raised RuntimeError: rubric service"),
        pytest.param(
            "tests.learner.rl_judges:not_a_number",
            "scorer tests.learner.rl_judges:not_a_number returned nan",
            marks=LONG,  # the same check as the raising scorer's, after the same engine start
        ),
    ],
)
def test_a_bad_reward_is_a_clear_error_not_a_traceback(
    default_model_config: TrimtabConfig, workdir: Path, reward: str, message: str
) -> None:
    done = learn(workdir, "bad", "grpo", 1, reward=reward)
    assert done.returncode in (1, 2) and message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
