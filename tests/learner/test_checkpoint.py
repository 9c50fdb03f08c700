"""Checkpoint and resume: a `trimtab learn` killed with SIGKILL and started again gives the same loss
curve and metrics file as an uninterrupted run; a checkpoint round-trips every piece of training state;
another run's checkpoint is refused, naming what differs; the data iterator starts at any step.

Tolerance: none. The resumed curve equals the uninterrupted one exactly (float32 on CPU with the same
thread count is deterministic, and the restored state is bit for bit the saved one), every metric
except the wall-clock `examples_per_s`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
import yaml
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from learner.checkpoint import Checkpointer, CheckpointMismatchError, TrainingState
from learner.data import TrainExample
from learner.distributed import DistContext, init_distributed, shard_model, shutdown
from learner.engine import epoch_batches, global_batches
from learner.optim import build_optimizer
from learner.phase import METRICS_FILE
from tests.learner.tiny import arithmetic_rows, make_tiny_model, write_jsonl
from tests.process_tree import kill_tree
from trimtab.app.cli import main
from trimtab.config import LearnerConfig, OptimConfig
from trimtab.errors import TrimtabError
from trimtab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
STEPS = 24
EVERY = 2
KILL_AFTER = 4  # SIGKILL once the checkpoint of this step exists
TIMING_KEYS = {"examples_per_s"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    make_tiny_model(root / "model")
    write_jsonl(root / "dpo.jsonl", arithmetic_rows(48, "dpo"))
    write_jsonl(root / "other.jsonl", arithmetic_rows(40, "dpo"))
    learner = {
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"batch_size": 8, "micro_batch_size": 4, "seed": 3},
        "checkpoint": {"every_steps": EVERY, "keep": 2},
    }
    (root / "learner.yaml").write_text(yaml.safe_dump({"learner": learner, "registry": {"root": str(root / "reg")}}))
    return root


# --- the data position -------------------------------------------------------------------------


def test_the_batch_iterator_starts_at_any_step_as_if_it_had_run_up_to_it() -> None:
    # Batching reads only len(example): token lists of random lengths stand in for examples.
    examples = cast(list[TrainExample], [[0] * random.Random(i).randint(3, 40) for i in range(37)])
    per_epoch = len(epoch_batches(examples, 4, seed=5, epoch=0))
    uninterrupted = list(itertools.islice(global_batches(examples, 4, seed=5), 3 * per_epoch))
    for start in (0, 1, per_epoch - 1, per_epoch, per_epoch + 2, 2 * per_epoch):
        resumed = global_batches(examples, 4, seed=5, start_step=start)
        assert list(itertools.islice(resumed, per_epoch)) == uninterrupted[start : start + per_epoch]


# --- the checkpoint itself, in process at world size 1 ------------------------------------------


@pytest.fixture
def context() -> Iterator[DistContext]:
    context = init_distributed(LearnerConfig())
    yield context
    shutdown(context)


def sharded_training_state(model_dir: Path) -> TrainingState:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    shard_model(model, torch.float32)
    optimizer, scheduler = build_optimizer(model, OptimConfig(warmup_steps=3), total_steps=10)
    return TrainingState(model, optimizer, scheduler)


def training_step(state: TrainingState) -> None:
    ids = torch.randint(0, 100, (2, 10))  # from the torch RNG: a restored RNG must give the same batch
    state.model(input_ids=ids, labels=ids).loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)


def snapshot(state: TrainingState) -> dict[str, torch.Tensor]:
    """Full copies of the (sharded) weights and Adam moments, and the learning rate."""
    weights = {f"w.{name}": full(p) for name, p in state.model.named_parameters()}
    moments = {f"m.{i}": full(s["exp_avg"]) for i, s in enumerate(state.optimizer.state.values())}
    return weights | moments | {"lr": torch.tensor(state.scheduler.get_last_lr())}


def full(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert [name for name in a if not torch.equal(a[name], b[name])] == []


def test_a_checkpoint_restores_weights_optimizer_schedule_and_random_streams(
    workdir: Path, tmp_path: Path, context: DistContext
) -> None:
    state = sharded_training_state(workdir / "model")
    checkpointer = Checkpointer(tmp_path / "ckpt", {"run": "a"}, context, keep=2)
    assert checkpointer.latest() is None
    torch.manual_seed(1)
    training_step(state)
    saved = checkpointer.save(1, state, metrics_log='{"step": 1}\n', extra={"offsets": {"feedback-0": 41}})
    expected = snapshot(state)
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    training_step(state)  # moves everything on: weights, moments, schedule, the RNG streams

    found = checkpointer.latest()
    assert found is not None and (found.path, found.step) == (saved.path, 1)
    assert (found.extra, found.metrics_log) == ({"offsets": {"feedback-0": 41}}, '{"step": 1}\n')
    fresh = sharded_training_state(workdir / "model")
    checkpointer.restore(found, fresh)
    assert_same(snapshot(fresh), expected)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws
    assert fresh.scheduler.state_dict()["last_epoch"] == 1


def test_a_companion_model_is_saved_and_restored_in_the_same_checkpoint(
    workdir: Path, tmp_path: Path, context: DistContext
) -> None:
    state = replace(sharded_training_state(workdir / "model"), companion=sharded_training_state(workdir / "model"))
    checkpointer = Checkpointer(tmp_path, {"run": "a"}, context, keep=1)
    assert state.companion is not None
    training_step(state)
    training_step(state.companion)
    training_step(state.companion)
    found = checkpointer.save(3, state)
    expected = {"policy": snapshot(state), "companion": snapshot(state.companion)}
    fresh = replace(sharded_training_state(workdir / "model"), companion=sharded_training_state(workdir / "model"))
    checkpointer.restore(found, fresh)
    assert fresh.companion is not None
    assert_same(snapshot(fresh), expected["policy"])
    assert_same(snapshot(fresh.companion), expected["companion"])
    assert fresh.companion.scheduler.state_dict()["last_epoch"] == 2
    with pytest.raises(CheckpointMismatchError, match="companion"):
        checkpointer.restore(found, sharded_training_state(workdir / "model"))


def test_old_checkpoints_and_partial_ones_are_removed(workdir: Path, tmp_path: Path, context: DistContext) -> None:
    state = sharded_training_state(workdir / "model")
    checkpointer = Checkpointer(tmp_path, {"run": "a"}, context, keep=2)
    for step in (2, 4, 6):
        checkpointer.save(step, state)
    (tmp_path / ".partial-step-00000008" / "weights").mkdir(parents=True)  # a save killed half way
    found = checkpointer.latest()
    assert found is not None and found.step == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004", "step-00000006"]


def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(
    workdir: Path, tmp_path: Path, context: DistContext
) -> None:
    state = sharded_training_state(workdir / "model")
    Checkpointer(tmp_path, {"algorithm": "dpo", "data sha256": "aa", "learner.optim.lr": 0.001}, context, 1).save(
        2, state
    )
    other = Checkpointer(tmp_path, {"algorithm": "dpo", "data sha256": "bb", "learner.optim.lr": 0.001}, context, 1)
    with pytest.raises(CheckpointMismatchError, match=r'data sha256: "aa" there, "bb" here') as raised:
        other.latest()
    assert "learner.optim.lr" not in str(raised.value) and "algorithm" not in str(raised.value)


def test_extra_must_be_json(workdir: Path, tmp_path: Path, context: DistContext) -> None:
    state = sharded_training_state(workdir / "model")
    with pytest.raises(TrimtabError, match="JSON"):
        Checkpointer(tmp_path, {}, context, 1).save(1, state, extra={"offsets": {1, 2}})
    assert not any(tmp_path.iterdir())  # nothing written


# --- SIGKILL and resume, through the CLI ---------------------------------------------------------


def learn_command(workdir: Path, data: str = "dpo.jsonl", ranks: int = 1) -> list[str]:
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [*launcher, "-m", "trimtab.app.cli", "--config", str(workdir / "learner.yaml"), "learn", "--algo", "dpo"]
    return [*command, "--data", str(workdir / data), "--model", str(workdir / "model"), "--steps", str(STEPS)]


def environment(tmp_path: Path) -> dict[str, str]:
    # One thread per process, the same in every run compared; temporary files of killed runs under tmp_path.
    return os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}


def run_to_the_end(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def kill_after_checkpoint(command: list[str], env: dict[str, str], checkpoints: Path, log: Path) -> None:
    """Start `command`, SIGKILL it and every process it started once checkpoint KILL_AFTER is complete."""
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 240
        while not (checkpoints / f"step-{KILL_AFTER:08d}" / "state.json").exists():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        kill_tree(process.pid)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]  # killed, not finished


def published_curve(workdir: Path, stdout: str) -> list[dict[str, float]]:
    version_id = stdout.strip().splitlines()[-1]
    lines = (Registry(workdir / "reg").path(version_id) / METRICS_FILE).read_text().splitlines()
    return [{key: value for key, value in json.loads(line).items() if key not in TIMING_KEYS} for line in lines]


def kill_resume_and_compare(workdir: Path, tmp_path: Path, ranks: int) -> Path:
    """Kill a run after checkpoint KILL_AFTER, run it again, compare with an uninterrupted run; returns
    the checkpoint directory."""
    env, checkpoints = environment(tmp_path), tmp_path / "checkpoints"
    command = learn_command(workdir, ranks=ranks)
    kill_after_checkpoint([*command, "--checkpoint-dir", str(checkpoints)], env, checkpoints, tmp_path / "killed.log")
    resumed = run_to_the_end([*command, "--checkpoint-dir", str(checkpoints)], env)
    match = re.search(r"resuming from step (\d+)", resumed.stderr)
    assert match is not None, resumed.stderr[-3000:]
    assert KILL_AFTER <= int(match.group(1)) < STEPS
    uninterrupted = run_to_the_end(command, env)
    curve = published_curve(workdir, resumed.stdout)
    assert curve == published_curve(workdir, uninterrupted.stdout)
    assert [row["step"] for row in curve] == list(range(1, STEPS + 1))
    assert curve[-1]["loss"] < curve[0]["loss"]  # it trained: the comparison is not between constants
    assert not list(checkpoints.glob(".partial-*"))
    assert len(list(checkpoints.glob("step-*"))) == 2  # learner.checkpoint.keep
    return checkpoints


# One rank takes the two ranks' path with one process: `make test-long`.
@pytest.mark.long
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_loss_curve(workdir: Path, tmp_path: Path) -> None:
    kill_resume_and_compare(workdir, tmp_path, ranks=1)


@pytest.mark.integration
def test_two_ranks_killed_with_sigkill_resume_to_the_uninterrupted_loss_curve(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints = kill_resume_and_compare(workdir, tmp_path, ranks=2)
    # The same directory, another run (other data, one rank): refused, naming each difference.
    other = learn_command(workdir, data="other.jsonl")[3:]  # the CLI's arguments, in process
    assert main([*other, "--checkpoint-dir", str(checkpoints)]) == 1
    differences = r"data sha256: \"\w+\" there, \"\w+\" here; world_size: 2 there, 1 here\."
    assert re.search(f"different run; {differences}", capsys.readouterr().err)
