#!/bin/bash
# Session 4 (KERNELS), one device call on one GPU: every GPU test, the graph-replay test three more
# times, the block benchmark with the vectorised element-wise/LayerNorm kernels on and off
# (SCALEFOLD_VECTOR_KERNELS), and the PyTorch blocks, all on the same card.
# Expects stripped release binaries in .dev/kernels/ (cuda_vs_cpu, bench_evoformer, bench_attention):
#   cargo test --release -p scalefold-trainer --test cuda_vs_cpu --no-run
#   cargo build --release -p scalefold-trainer --example bench_evoformer --example bench_attention
# and carry [".dev/kernels"]. Full logs land in $OUT.
set -o pipefail
export SCALEFOLD_KERNEL_CACHE=/tmp/kcache
D=.dev/kernels
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
T0=$(date +%s)
timeout 240 $D/cuda_vs_cpu --ignored --nocapture --test-threads=1 > $OUT/tests.log 2>&1
echo "GPU tests rc=$? in $(( $(date +%s) - T0 )) s"
grep -E "^test |test result|panicked|worst" $OUT/tests.log | tail -16
# The graph-replay test again: 3 runs each with the defaults, the CUDA-core attention, and the
# scalar element-wise kernels (5 replays per run), to catch the intermittent replay difference.
for env in SCALEFOLD_VECTOR_KERNELS=on SCALEFOLD_ATTENTION_KERNELS=simt SCALEFOLD_VECTOR_KERNELS=off; do
  for i in 1 2 3; do
    env $env timeout 60 $D/cuda_vs_cpu --ignored --nocapture --exact gpu_graph_replay_matches_eager >> $OUT/replay.log 2>&1
    echo "graph replay test, $env, run $i: rc=$?"
  done
done
grep -E "worst" $OUT/replay.log | head -3
timeout 150 $D/bench_evoformer --profile > $OUT/bench_on.log 2>&1; echo "bench (vector on) rc=$?"
SCALEFOLD_VECTOR_KERNELS=off timeout 150 $D/bench_evoformer --profile > $OUT/bench_off.log 2>&1; echo "bench (vector off) rc=$?"
grep -hE "device:|fwd\+bwd" $OUT/bench_on.log $OUT/bench_off.log
PYTHONUNBUFFERED=1 timeout 240 python3 trainer/bench/evoformer_torch.py --iters 20 > $OUT/torch.log 2>&1
echo "torch rc=$?"; grep -E "^torch|Error" $OUT/torch.log
# compute-sanitizer on the dense-op test (every vectorised kernel, the shared-memory ones included).
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$CS" ]; then
  for tool in memcheck racecheck; do
    timeout 150 $CS --tool $tool --print-limit 8 $D/cuda_vs_cpu --ignored --exact gpu_dense_ops_match_cpu > $OUT/sanitizer_$tool.log 2>&1
    echo "compute-sanitizer $tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|test result" $OUT/sanitizer_$tool.log | head -4
  done
fi
echo "total $(( $(date +%s) - T0 )) s"
