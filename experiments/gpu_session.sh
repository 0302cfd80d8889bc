#!/usr/bin/env bash
# One accelerator slot's measurements in two calls of at most 8 minutes each (the steps, their
# caps and what each keeps when cut short: experiments/gpu_session.py).
#
#   bash experiments/gpu_session.sh --dry-run               # any machine: both calls' plans
#   bash experiments/gpu_session.sh --call 1 OUTDIR [IDX_DIR]  # resnet18/wrn16_4 MFU, 256-model epoch, plan
#   bash experiments/gpu_session.sh --call 2 OUTDIR [IDX_DIR]  # the study's SAM arm, then the rest
#
# Run from the repository root with the package importable (PYTHONPATH=$PWD is set if unset).
# IDX_DIR holds Fashion-MNIST's four IDX files (default .devdata/fashion-mnist: copy them from
# /usr/share/datasets/fashion-mnist and carry that folder). With the device tool, run each call
# with timeout_s 510 and OUTDIR=$OUT; results land in OUTDIR/call1 and OUTDIR/call2.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
if [ "${1:-}" = "--dry-run" ]; then
  exec python3 -m experiments.gpu_session --dry-run "${2:-OUTDIR}" --idx "${3:-.devdata/fashion-mnist}"
fi
if [ "${1:-}" != "--call" ] || [ -z "${2:-}" ] || [ -z "${3:-}" ]; then
  echo "usage: gpu_session.sh --dry-run | --call 1|2 OUTDIR [IDX_DIR]" >&2
  exit 2
fi
call=$2 out=$3 idx=${4:-.devdata/fashion-mnist}
mkdir -p "$out/call$call"
{
  date -u; nvidia-smi -L 2>/dev/null; nproc
  python3 -c "import jax, flax, optax, orbax.checkpoint as oc, numpy; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__); print(jax.devices())"
} > "$out/call$call/env.txt" 2>&1
cat "$out/call$call/env.txt"
exec python3 -m experiments.gpu_session --call "$call" "$out" --idx "$idx"
