#!/bin/bash
# One GPU: the AlphaFold initial-training preset (48 Evoformer + 4 extra-MSA blocks, crop 256, 124+4 MSA
# rows, 1024 extra, 4 templates, 8 structure layers, dropout on) trained from a synthetic dataset, eager
# and then with `run.cuda_graphs = true`, same seed (so the same samples and recycling draws); per-step
# time, host (CPU structure module) time and peak GPU memory. Then the tiny-model graph test with dropout.
# Expects, stripped, .dev/af2/scalefold (release) and .dev/af2/cuda_graph_step (release test binary).
# Usage (device): bash trainer/bench/device_af2_graphs.sh STEPS
set -o pipefail
STEPS=${1:-20}
export SCALEFOLD_KERNEL_CACHE=/tmp/kcache
B=./.dev/af2/scalefold
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
T0=$(date +%s)
./.dev/af2/cuda_graph_step --ignored --nocapture --test-threads=1 2>&1 | grep -E "crop|test result|panicked" | tee $OUT/graph_test.log
$B synth --chains 32 --out /tmp/corpus --min-length 200 --max-length 400 --max-msa-depth 1500 > /dev/null
$B ingest --structures /tmp/corpus/mmcif --alignments /tmp/corpus/alignments --clusters /tmp/corpus/clusters.txt --out /tmp/ds --writers 8 --quiet 2>&1 | tail -2
echo "dataset ready at $(( $(date +%s) - T0 )) s"
for mode in eager graphs; do
  SET=""; [ $mode = graphs ] && SET="--set run.cuda_graphs=true"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > $OUT/mem_$mode.log &
  SMI=$!
  timeout 250 $B train --data /tmp/ds --config initial_training --out /tmp/run_$mode --device cuda --steps $STEPS --quiet $SET 2>&1 | tail -4
  kill $SMI
  echo "$mode: peak GPU memory used $(sort -n $OUT/mem_$mode.log | tail -1) MiB"
  cp /tmp/run_$mode/metrics.jsonl $OUT/metrics_$mode.jsonl 2>/dev/null
  echo "$mode done at $(( $(date +%s) - T0 )) s"
done
python3 - <<'PY'
import json, collections
runs = {m: [json.loads(l) for l in open(f'/tmp/run_{m}/metrics.jsonl')] for m in ('eager', 'graphs')}
for m, rows in runs.items():
    for r in rows:
        print(f"{m:6s} step {r['step']:3d} recycles {r['recycles']} step {r['step_seconds']:.3f} s host {r.get('host_seconds', 0):.3f} s wait {r['data_wait_seconds']:.3f} loss {r['loss']:.4f} skipped {r['skipped']}")
for m, rows in runs.items():
    by = collections.defaultdict(list)
    for r in rows[1:]:   # step 0 compiles kernels and warms up (and captures nothing yet)
        by[r['recycles']].append(r)
    for k in sorted(by):
        v = by[k]
        st = sum(r['step_seconds'] for r in v) / len(v); hs = sum(r.get('host_seconds', 0) for r in v) / len(v)
        print(f"{m:6s} recycles {k}: {len(v)} steps, mean step {st:.3f} s, host {hs:.3f} s, device+transfers {st - hs:.3f} s")
    rest = rows[1:]
    print(f"{m:6s} mean over steps 1..: {sum(r['step_seconds'] for r in rest)/len(rest):.3f} s, host {sum(r.get('host_seconds',0) for r in rest)/len(rest):.3f} s; loss first/last 5 {sum(r['loss'] for r in rows[:5])/5:.3f} / {sum(r['loss'] for r in rows[-5:])/5:.3f}")
PY
echo "total $(( $(date +%s) - T0 )) s"
