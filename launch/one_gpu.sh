#!/usr/bin/env bash
# One GPU: the whole study in one process on device 0.
#
#   launch/one_gpu.sh CONFIG.json RUN_DIR [WAVE_SIZE]
#
# WAVE_SIZE (optional) trains the models in waves of that many (see `jaxsam plan --config
# CONFIG.json` for how many fit); a rerun after a crash skips the finished waves and resumes
# the unfinished one from its checkpoint.
set -euo pipefail
CONFIG=${1:?usage: one_gpu.sh CONFIG.json RUN_DIR [WAVE_SIZE]}
RUN=${2:?usage: one_gpu.sh CONFIG.json RUN_DIR [WAVE_SIZE]}
WAVE_SIZE=${3:-}

export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}

JAX_PLATFORMS=cpu jaxsam plan --config "$CONFIG"
jaxsam wave run --config "$CONFIG" --out "$RUN" ${WAVE_SIZE:+--wave-size "$WAVE_SIZE"}
jaxsam status "$RUN"
