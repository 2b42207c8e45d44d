#!/bin/bash
# Carry a folder holding this script, timeline.py and scalefold-new.xz (a stripped, xz'd release
# build), then `CHAINS=16000 BIN=0.25 bash FOLDER/timeline.sh` ($OUT/timeline.txt).
# Runs `ingest --threads 16` twice on a synthetic corpus with a JSON log and a /proc/stat
# sampler, and prints chains finished and cores busy per time bin.
cd "$(dirname "$0")"
[ -x /tmp/sf ] || { xz -dc scalefold-new.xz > /tmp/sf && chmod +x /tmp/sf; }
C=/tmp/c${CHAINS:-8000}
[ -d $C ] || /tmp/sf synth --chains ${CHAINS:-8000} --out $C | tail -1
for r in 1 2; do
  rm -rf /tmp/ds
  python3 -c '
import time
with open("/tmp/cpu.txt", "w") as out:
    while True:
        f = open("/proc/stat").readline().split()[1:]
        v = list(map(int, f)); idle = v[3] + v[4]; tot = sum(v)
        out.write(f"{time.time()} {tot - idle} {tot}\n"); out.flush(); time.sleep(0.02)
' & S=$!
  sleep 0.2
  /tmp/sf ingest --structures $C/mmcif --alignments $C/alignments --out /tmp/ds --clusters $C/clusters.txt --threads ${THREADS:-16} --log-format json 2> /tmp/log.json > /tmp/o.txt
  sleep 0.1; kill $S
  echo "== round $r" | tee -a $OUT/timeline.txt
  python3 timeline.py /tmp/log.json /tmp/cpu.txt ${BIN:-0.1} | tee -a $OUT/timeline.txt
done
