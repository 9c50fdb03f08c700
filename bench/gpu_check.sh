#!/usr/bin/env bash
# The learner's GPU rows (`python -m bench.learner --gpu`) on a lent GPU machine whose python3 holds torch
# with CUDA and transformers, but not this project's environment. Set-up and the files it needs carried
# (wheels in .whl/, the real model's tokenizer): docs/learner.md#measuring-on-a-gpu. Results: $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python3 -m bench.learner --gpu
if [ -n "${OUT:-}" ]; then
    cp bench/results/learner-gpu/* "$OUT"/
fi
