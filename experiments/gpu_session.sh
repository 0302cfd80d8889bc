#!/usr/bin/env bash
# One accelerator session's measurements, prepared to run unattended in a few minutes:
#   1. `jaxsam bench suite` (training throughput vs the loop, MFU, SAM/SGD, the measured
#      256-model epoch, plan vs measured, chunked memory, bench sam, bench score);
#   2. the Fashion-MNIST ResNet-9 SGD-vs-SAM study at the paper's regime (one seed).
#
# Usage (from the repository root, with the package importable, e.g. PYTHONPATH=$PWD):
#   bash experiments/gpu_session.sh OUTDIR [SUITE_BUDGET_S] [STUDY_TIMEOUT_S] [IDX_DIR]
# (SUITE_BUDGET_S = 0 runs the study alone.)
# IDX_DIR holds Fashion-MNIST's four original IDX files (default .devdata/fashion-mnist; copy
# them from /usr/share/datasets/fashion-mnist). Results land flat in OUTDIR: bench.json,
# bench.md, study_table.md, study_results.json, study_metrics_*.json, env.txt; the run
# directories stay in a temporary folder.
set -u
out=${1:?usage: gpu_session.sh OUTDIR [SUITE_BUDGET_S] [STUDY_TIMEOUT_S] [IDX_DIR]}
suite_budget=${2:-340}
study_timeout=${3:-210}
idx=${4:-.devdata/fashion-mnist}
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 JAXSAM_CACHE_DIR=$work/cache PYTHONPATH=${PYTHONPATH:-$PWD}
{
  date -u; nvidia-smi -L 2>/dev/null; nproc
  python3 -c "import jax, flax, optax, orbax.checkpoint as oc, numpy; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__); print(jax.devices())"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

t0=$(date +%s)
if [ "$suite_budget" != 0 ]; then  # 0: the study alone
  python3 -m jaxsam bench suite --out "$work/suite" --budget-s "$suite_budget" \
    --sections train:cnn,train:resnet9,epoch,plan,sam,train:wrn16_4,train:resnet18,score,chunked \
    --section-timeout-s 110
  cp "$work/suite/bench.json" "$work/suite/bench.md" "$out/" 2>/dev/null
  echo "suite took $(( $(date +%s) - t0 )) s"
fi

t1=$(date +%s)
timeout "$study_timeout" python3 -m experiments.run \
  experiments/configs/fashion_mnist_resnet_sam_vs_sgd.json --out "$work/study" --no-progress --seeds 0 \
  --set "data.dataset=idx:$idx"
echo "study exit $? after $(( $(date +%s) - t1 )) s"
cp "$work/study/table.md" "$out/study_table.md" 2>/dev/null
cp "$work/study/results.json" "$out/study_results.json" 2>/dev/null
for arm in SGD SAM; do
  cp "$work/study/seed0/$arm/metrics.json" "$out/study_metrics_$arm.json" 2>/dev/null
done
ls -la "$out"
