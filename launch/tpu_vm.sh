#!/usr/bin/env bash
# TPU VM slice (e.g. v5p-32, v4-64): the same command on every worker via gcloud.
#
#   launch/tpu_vm.sh TPU_NAME ZONE CONFIG.json RUN_DIR [WAVE_SIZE]
#
# jax.distributed.initialize() finds the slice's workers by itself on TPU VMs; --distributed
# turns it on. Worker 0 writes config + masks and assembles the logits (in a child process);
# every worker trains its block of each wave. CONFIG.json and RUN_DIR must be paths that every
# worker sees (an NFS / Filestore mount, or a gcsfuse mount of a bucket), and jaxsam must be
# installed on every worker (set JAXSAM_PIP to a pip spec, e.g. a git URL or a wheel on
# shared storage, and the first command installs it with jax[tpu] on every worker).
set -euo pipefail
TPU_NAME=${1:?usage: tpu_vm.sh TPU_NAME ZONE CONFIG.json RUN_DIR [WAVE_SIZE]}
ZONE=${2:?usage: tpu_vm.sh TPU_NAME ZONE CONFIG.json RUN_DIR [WAVE_SIZE]}
CONFIG=${3:?usage: tpu_vm.sh TPU_NAME ZONE CONFIG.json RUN_DIR [WAVE_SIZE]}
RUN=${4:?usage: tpu_vm.sh TPU_NAME ZONE CONFIG.json RUN_DIR [WAVE_SIZE]}
WAVE_SIZE=${5:-}

if [ -n "${JAXSAM_PIP:-}" ]; then
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
    --command="pip install -q 'jax[tpu]' '$JAXSAM_PIP'"
fi
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
  --command="jaxsam wave run --config $CONFIG --out $RUN ${WAVE_SIZE:+--wave-size $WAVE_SIZE} --no-progress --distributed"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=0 --command="jaxsam status $RUN"
