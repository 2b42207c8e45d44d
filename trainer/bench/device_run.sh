#!/bin/bash
# Run from the repository root on the GPU machine, with the stripped release binaries
# copied into .dev/ (cuda_vs_cpu: the test binary of tests/cuda_vs_cpu.rs; scalefold: the CLI).
# One device call: card, GPU tests vs CPU, graph replay, `scalefold bench evoformer` (+profile, +json), PyTorch baseline.
set -o pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export SCALEFOLD_KERNEL_CACHE=/tmp/kcache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
T0=$(date +%s)
./.dev/cuda_vs_cpu --ignored --nocapture --test-threads=1 2>&1 | tee $OUT/tests.log | grep -E "^test |rel err|result|panicked|above|relative difference"
echo "tests took $(( $(date +%s) - T0 )) s"
./.dev/scalefold bench evoformer --profile 2>&1 | tee $OUT/bench.log
./.dev/scalefold bench evoformer --json > $OUT/bench.json 2>&1; head -c 400 $OUT/bench.json; echo
PYTHONUNBUFFERED=1 timeout 300 python3 trainer/bench/evoformer_torch.py --iters 20 2>&1 | tee $OUT/torch.log | grep "^torch"
echo "total $(( $(date +%s) - T0 )) s"
