"""Offline training (`trimtab learn`) on a tiny Llama: it learns, the loss curve does not depend on how a
global batch is split into micro-batches or ranks, and the result is a registry version transformers loads.

Invariant tolerance: loss curves agree within 1e-5 absolute per step (float32; observed differences are
about 1e-7, from the order of floating-point sums only).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from transformers import AutoModelForCausalLM

from learner.offline import METRICS_FILE, LearnRequest, run_learn
from tests.learner.tiny import arithmetic_rows, make_tiny_model, write_jsonl
from trimtab.app.cli import main
from trimtab.config import TrimtabConfig, load_config
from trimtab.config.learner import ALGORITHMS
from trimtab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
CURVE_TOLERANCE = 1e-5
STEPS = 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("learn")
    make_tiny_model(root / "model")
    for algorithm in ALGORITHMS:
        write_jsonl(root / f"{algorithm}.jsonl", arithmetic_rows(48, algorithm))
    return root


def write_config(directory: Path, micro_batch_size: int, batch_size: int = 8) -> Path:
    """A learner.yaml: lr high enough that a few steps move a tiny model; no warm-up."""
    learner = {
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "train": {"batch_size": batch_size, "micro_batch_size": micro_batch_size, "seed": 3},
    }
    path = directory / f"learner-b{batch_size}-m{micro_batch_size}.yaml"
    path.write_text(yaml.safe_dump({"learner": learner, "registry": {"root": str(directory / "registry")}}))
    return path


def learn(config_path: Path, algorithm: str, workdir: Path, steps: int = STEPS) -> list[dict[str, float]]:
    """One in-process (world size 1) run; the loss curve from the published version's metrics file."""
    config = load_config(config_path, environ={})
    request = LearnRequest(algorithm, workdir / f"{algorithm}.jsonl", workdir / "model", steps)
    result = run_learn(config, request, Console(file=io.StringIO()))
    assert result.version_id is not None
    return read_curve(config, result.version_id)


def read_curve(config: TrimtabConfig, version_id: str) -> list[dict[str, float]]:
    lines = (Registry(config.registry.root).path(version_id) / METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_same_curve(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert [row["step"] for row in a] == [row["step"] for row in b]
    for row_a, row_b in zip(a, b, strict=True):
        assert abs(row_a["loss"] - row_b["loss"]) <= CURVE_TOLERANCE, (row_a, row_b)


def test_dpo_lowers_the_dpo_loss_from_log_2(workdir: Path) -> None:
    curve = learn(write_config(workdir, micro_batch_size=8), "dpo", workdir, steps=8)
    # Step 1: the policy IS the reference (log-probs computed once, before training), so every
    # implicit reward is 0 and the loss is -log sigma(0) = log 2.
    assert curve[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.1
    assert curve[-1]["reward_margin"] > 0


# ORPO is left out: its SFT term is a token mean per micro-batch (see learner.objectives._orpo).
@pytest.mark.parametrize("algorithm", ["sft", "steerlm", "rm", "dpo", "ipo", "simpo", "kto"])
def test_batch_8x1_and_4x2_accumulation_give_the_same_loss_curve(workdir: Path, algorithm: str) -> None:
    whole = learn(write_config(workdir, micro_batch_size=8), algorithm, workdir)
    accumulated = learn(write_config(workdir, micro_batch_size=4), algorithm, workdir)
    assert_same_curve(whole, accumulated)
    assert whole[-1]["loss"] != whole[0]["loss"]  # it trained: the comparison is not between two constants


def test_the_cli_publishes_a_version_that_transformers_loads_with_its_lineage(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(workdir, micro_batch_size=4)
    args = ["learn", "--algo", "kto", "--data", str(workdir / "kto.jsonl"), "--model", str(workdir / "model")]
    assert main([*args, "--steps", "2", "--config", str(config_path)]) == 0
    version_id = capsys.readouterr().out.strip()
    registry = Registry(workdir / "registry")
    manifest = registry.get(version_id)
    assert (manifest.algorithm, manifest.parent, manifest.data_source) == ("kto", None, str(workdir / "kto.jsonl"))
    assert set(manifest.metrics) >= {"loss", "kl", "grad_norm", "lr"}
    assert manifest.config["learner"]["train"]["micro_batch_size"] == 4
    assert registry.verify(version_id) == []
    trained = AutoModelForCausalLM.from_pretrained(registry.path(version_id)).state_dict()
    initial = AutoModelForCausalLM.from_pretrained(workdir / "model").state_dict()
    unchanged = [name for name, weight in initial.items() if torch.equal(weight, trained[name])]
    assert unchanged == []  # every tensor trained, including the root FSDP group's (embeddings, lm_head)

    # Training from a registry version records it as the parent.
    child_args = [*args[:-1], str(registry.path(version_id)), "--steps", "1", "--config", str(config_path)]
    assert main(child_args) == 0
    assert registry.get(capsys.readouterr().out.strip()).parent == version_id


def torchrun_learn(config_path: Path, algorithm: str, workdir: Path, ranks: int) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command += ["-m", "trimtab.app.cli", "--config", str(config_path), "learn", "--algo", algorithm]
    command += ["--data", str(workdir / f"{algorithm}.jsonl"), "--model", str(workdir / "model")]
    command += ["--steps", str(STEPS)]
    # One thread per rank: the two ranks share two cores.
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["dpo", "kto"])
def test_one_rank_and_two_ranks_give_the_same_loss_curve(workdir: Path, algorithm: str) -> None:
    # batch 8, micro-batch 4: one rank accumulates two micro-batches, two ranks take one each. KTO also
    # checks that its KL reference point z_0 is the global batch's, gathered over ranks.
    config_path = write_config(workdir, micro_batch_size=4)
    one = learn(config_path, algorithm, workdir)
    version_id = torchrun_learn(config_path, algorithm, workdir, ranks=2)
    two = read_curve(load_config(config_path, environ={}), version_id)
    assert_same_curve(one, two)
    assert Registry(workdir / "registry").get(version_id).config["world_size"] == 2
