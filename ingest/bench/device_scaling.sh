#!/bin/bash
# Session 4 ingest scaling on the device host (CPU only): old vs new binary, same corpus.
# Needs scalefold-base.gz and scalefold-new.gz (stripped, gzip'd release builds) beside it;
# run as `bash .dev/ingest/device_scaling.sh` with .dev/ingest carried. Writes host.txt,
# bench.txt and ab.txt to $OUT.
set -o pipefail
cd "$(dirname "$0")"
for b in base new; do gunzip -c scalefold-$b.gz > /tmp/sf-$b && chmod +x /tmp/sf-$b; done
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket"; free -g | head -2; df -h /tmp | tail -1; } 2>&1 | tee $OUT/host.txt
C=/tmp/c4000
for b in new base; do
  echo "== $b bench ingest"
  /tmp/sf-$b bench ingest --chains 4000 --corpus $C --threads 1,2,4,8,16 2>&1 | grep -v "^\s*$"
done 2>&1 | tee $OUT/bench.txt
echo "== alternating ingest --threads 16 and --threads 2 (wall, user, sys)" | tee $OUT/ab.txt
for r in 1 2; do for t in 16 2; do for b in base new; do
  rm -rf /tmp/ds
  ( TIMEFORMAT="%R %U %S"; time /tmp/sf-$b ingest --structures $C/mmcif --alignments $C/alignments --out /tmp/ds --threads $t --quiet ) 2> /tmp/t.txt
  echo "$b threads $t round $r: $(tail -1 /tmp/t.txt) shards $(du -sb /tmp/ds/shards | cut -f1)" | tee -a $OUT/ab.txt
done; done; done
