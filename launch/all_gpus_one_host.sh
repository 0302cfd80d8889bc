#!/usr/bin/env bash
# All GPUs of one host: one process per GPU on jax.distributed, coordinator on localhost.
#
#   launch/all_gpus_one_host.sh CONFIG.json RUN_DIR [WAVE_SIZE]
#
# Each process sees one GPU and trains its block of every wave (models are independent, so
# no gradient ever crosses GPUs); the wave's logits are saved by all processes together as one
# orbax array. Wave sizes must be a multiple of the GPU count. NUM_GPUS defaults to all GPUs
# that nvidia-smi lists; PORT to 12355.
set -euo pipefail
CONFIG=${1:?usage: all_gpus_one_host.sh CONFIG.json RUN_DIR [WAVE_SIZE]}
RUN=${2:?usage: all_gpus_one_host.sh CONFIG.json RUN_DIR [WAVE_SIZE]}
WAVE_SIZE=${3:-}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi --list-gpus | wc -l)}
PORT=${PORT:-12355}

JAX_PLATFORMS=cpu jaxsam plan --config "$CONFIG"
pids=()
for ((i = 0; i < NUM_GPUS; i++)); do
  CUDA_VISIBLE_DEVICES=$i jaxsam wave run --config "$CONFIG" --out "$RUN" \
    ${WAVE_SIZE:+--wave-size "$WAVE_SIZE"} --no-progress \
    --distributed --coordinator "127.0.0.1:$PORT" --num-processes "$NUM_GPUS" --process-id "$i" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
jaxsam status "$RUN"
exit "$status"
