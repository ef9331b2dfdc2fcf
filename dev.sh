#!/usr/bin/env bash
# The project's two entry points. Each creates or refreshes the virtual environment first.
#
#   ./dev.sh main    the main job (see README.md)
#   ./dev.sh test    the whole test suite (lint + pytest), as CI runs it
#
# Environment: PYTHON (interpreter for the venv, default python3), NEGOTIATION_VENV (venv
# folder, default .venv), TORCH_SPEC (default torch==2.13.0, the tested CPU build).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${NEGOTIATION_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

ensure_env() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "dev.sh: Python >= 3.10 is needed; set PYTHON=/path/to/python3.x" >&2
    exit 1
  }
  if [ ! -x "$VENV/bin/python" ]; then
    echo "dev.sh: creating virtual environment $VENV" >&2
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the dependency files or the set of top-level packages change.
  local stamp
  stamp="$VENV/.installed-$( (cat pyproject.toml constraints.txt; ls -d */__init__.py) | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "dev.sh: installing dependencies into $VENV (torch first, so pip keeps its build)" >&2
    "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  main)
    ensure_env
    # Fetch the embedded models, train the policy by negotiation self-play for a few minutes,
    # then compare the trained adapter with the untrained model on held-out scenarios (paired
    # intervals; benchmarks/learning.py). Every stage resumes, so rerunning after an
    # interruption finishes the same job. Extra arguments go to benchmarks.learning
    # (e.g. --set optim.max_steps=8).
    out="${MAIN_OUT:-runs/main}"
    "$VENV/bin/negotiate" models fetch smollm2             # the policy and the CA reward model
    "$VENV/bin/negotiate" models fetch qwen2.5-coder-0.5b  # the agreement judge
    "$VENV/bin/python" -m benchmarks.learning --config configs/cpu_smoke.yaml --runs "$out" \
      --out "$out/report" --scenarios 6 --second-judge none "$@"
    echo "The trained adapter is $out/selfplay/final. For a run long enough to measure learning,"
    echo "with a second judge: python -m benchmarks.learning (docs/results/learning/)."
    ;;
  test)
    ensure_env
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  *)
    echo "usage: ./dev.sh main|test [extra arguments]" >&2
    exit 2
    ;;
esac
