#!/bin/bash
# Call 2 (one GPU): the AlphaFold initial-training preset (48 Evoformer + 4 extra-MSA blocks, crop 256,
# Expects the stripped release `scalefold` in .dev/final/ and the cuda_vs_cpu test binary in .dev/gpu/; carry both.
# 124+4 MSA rows, 1024 extra, 4 templates, 8 structure layers) trained from a synthetic dataset for 20+
# steps with the MLPerf recycling draw; peak GPU memory sampled by nvidia-smi. Then compute-sanitizer on
# the graph-replay test.
set -o pipefail
export SCALEFOLD_KERNEL_CACHE=/tmp/kcache
B=./.dev/final/scalefold
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
T0=$(date +%s)
$B synth --chains 48 --out /tmp/corpus --min-length 200 --max-length 400 --max-msa-depth 1500 > /dev/null
$B ingest --structures /tmp/corpus/mmcif --alignments /tmp/corpus/alignments --clusters /tmp/corpus/clusters.txt --out /tmp/ds --writers 8 2>&1 | tail -2
echo "dataset ready at $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > $OUT/mem.log &
SMI=$!
timeout 420 $B train --data /tmp/ds --config initial_training --out /tmp/run --device cuda --steps 24 --quiet 2>&1 | tail -15
kill $SMI
echo "peak GPU memory used: $(sort -n $OUT/mem.log | tail -1) MiB"
cp /tmp/run/metrics.jsonl $OUT/ 2>/dev/null; cp /tmp/run/loss.png $OUT/ 2>/dev/null
python3 - <<'PY'
import json
rows=[json.loads(l) for l in open('/tmp/run/metrics.jsonl')]
for r in rows:
    t=r.get('terms',{})
    print(f"step {r['step']:3d} recycles {r['recycles']} step {r['step_seconds']:.2f} s wait {r['data_wait_seconds']:.3f} s loss {r['loss']:.4f} fape {t.get('fape',0):.4f} grad_norm {r['grad_norm']:.3f} skipped {r['skipped']}")
PY
echo "train done at $(( $(date +%s) - T0 )) s"
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
for tool in initcheck racecheck; do
  timeout 100 $CS --tool $tool --print-limit 5 ./.dev/gpu/cuda_vs_cpu --ignored --test-threads=1 gpu_graph_replay_matches_eager 2>&1 | grep -vE "^\s*$" | tail -12
done
echo "total $(( $(date +%s) - T0 )) s"
