#!/usr/bin/env bash
# GPU smoke check (one GPU, under 6 minutes): zoo, CUDA kernels == CPU, vLLM engine start and
# switch time, a 20-evaluation zoo search on vLLM. Run from the repository root, in an
# environment with `pip install '.[gpu]'` (the image of deploy/Dockerfile has it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec timeout 900 "$PY" deploy/gpu_smoke.py "$@"
