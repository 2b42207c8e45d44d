#!/bin/bash
# Ingest scaling on the device host (CPU only): base vs new binary, same corpus.
# Needs scalefold-base.xz and scalefold-new.xz (stripped, xz'd release builds) beside it;
# run as `bash .dev/ingest/device_scaling.sh` with .dev/ingest carried. Writes host.txt,
# bench.txt and ab.txt to $OUT. Settings (environment): CHAINS (default 4000) the corpus
# size; BASE_BENCH=0 skips the base binary's bench (the alternating runs still compare
# both); BIG_CHAINS=N adds `ingest --threads 16` runs on an N-chain corpus; THREADS
# (default 1,2,4,8,16) the bench's thread counts; WRITER_RUNS=0 skips the --writers runs.
# Each alternating run prints its wall, user and sys seconds, the shard bytes and (binaries from
# session 6 on) the job's CPU seconds by stage from its report.
set -o pipefail
cd "$(dirname "$0")"
start=$SECONDS
for b in base new; do xz -dc scalefold-$b.xz > /tmp/sf-$b && chmod +x /tmp/sf-$b; done
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket"; free -g | head -2; } 2>&1 | tee $OUT/host.txt
C=/tmp/c${CHAINS:-4000}
benches="new"; [ "${BASE_BENCH:-1}" = 1 ] && benches="new base"
for b in $benches; do
  echo "== $b bench ingest ($((SECONDS - start)) s)"
  /tmp/sf-$b bench ingest --chains ${CHAINS:-4000} --corpus $C --threads ${THREADS:-1,2,4,8,16} 2>&1 | grep -v "^\s*$"
done 2>&1 | tee $OUT/bench.txt
run() { # binary threads label extra-args...
  local b=$1 t=$2 label=$3; shift 3
  rm -rf /tmp/ds
  ( TIMEFORMAT="%R %U %S"; time /tmp/sf-$b ingest --structures $C/mmcif --alignments $C/alignments \
      --out /tmp/ds --threads $t --quiet --report /tmp/r.json "$@" ) 2> /tmp/t.txt
  local stages=$(python3 -c "import json; c=json.load(open('/tmp/r.json')).get('cpu_seconds'); print(' '.join(f'{k} {v:.2f}' for k,v in c.items()) if c else '')" 2>/dev/null)
  echo "$b $(basename $C) threads $t $label: $(tail -1 /tmp/t.txt) shards $(du -sb /tmp/ds/shards | cut -f1) $stages" | tee -a $OUT/ab.txt
}
echo "== alternating ingest (wall, user, sys in s) at $((SECONDS - start)) s" | tee $OUT/ab.txt
for r in 1 2; do for b in base new; do run $b 16 "round $r"; done; done
for b in base new; do run $b 2 "round 1"; done
[ "${WRITER_RUNS:-1}" = 1 ] && for w in 8 16; do run new 16 "writers $w" --writers $w; done
if [ -n "$BIG_CHAINS" ]; then
  C=/tmp/c$BIG_CHAINS
  /tmp/sf-new synth --chains $BIG_CHAINS --out $C | tail -1 | tee -a $OUT/ab.txt
  for b in base new; do run $b 16 "big"; done
  [ "${WRITER_RUNS:-1}" = 1 ] && run new 16 "big, writers 8" --writers 8
fi
echo "done at $((SECONDS - start)) s" | tee -a $OUT/ab.txt
