#!/bin/bash
# Call 1 (2 GPUs): NCCL tests, GPU tests vs CPU, attention + block benchmarks (tensor-core vs CUDA-core), PyTorch baseline.
# Expects stripped release binaries in .dev/gpu/ (nccl, cuda_vs_cpu, bench_attention, bench_evoformer); carry [".dev/gpu"].
set -o pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 SCALEFOLD_KERNEL_CACHE=/tmp/kcache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
T0=$(date +%s)
if ! ldconfig -p | grep -q 'libnccl.so '; then
  L=$(ldconfig -p | awk '/libnccl\.so/{print $NF; exit}')
  [ -z "$L" ] && L=$(find / -name 'libnccl.so*' -not -path '/proc/*' 2>/dev/null | head -1)
  echo "NCCL library: ${L:-none found}"
  mkdir -p /tmp/ncclib && [ -n "$L" ] && ln -sf "$L" /tmp/ncclib/libnccl.so
  export LD_LIBRARY_PATH=/tmp/ncclib:$LD_LIBRARY_PATH
fi
timeout 120 ./.dev/gpu/nccl --ignored --nocapture --test-threads=1 2>&1 | tee $OUT/nccl.log | grep -vE "^\s*$" | tail -25
echo "nccl took $(( $(date +%s) - T0 )) s"
export CUDA_VISIBLE_DEVICES=0
timeout 200 ./.dev/gpu/cuda_vs_cpu --ignored --nocapture --test-threads=1 2>&1 | tee $OUT/tests.log | grep -E "^test |result|panicked|FAILED" | tail -30
echo "tests done at $(( $(date +%s) - T0 )) s"
timeout 60 ./.dev/gpu/bench_attention --iters 20 2>&1 | tee $OUT/attn.log | tail -12
timeout 90 ./.dev/gpu/bench_evoformer 2>&1 | tee $OUT/bench_tc.log | tail -30
SCALEFOLD_ATTENTION_KERNELS=simt timeout 90 ./.dev/gpu/bench_evoformer 2>&1 | tee $OUT/bench_simt.log | tail -14
PYTHONUNBUFFERED=1 timeout 200 python3 trainer/bench/evoformer_torch.py --iters 20 2>&1 | tee $OUT/torch.log | grep -E "^torch|Error" 
echo "total $(( $(date +%s) - T0 )) s"
