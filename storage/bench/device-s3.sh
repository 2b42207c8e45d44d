#!/bin/bash
# Carry a folder holding this script, weed.xz (xz -6 of `pyenv which weed`, SeaweedFS 4.48) and
# NAME.xz for each stripped scalefold binary NAME (64 MiB in all), then run
#   bash FOLDER/device-s3.sh NAME:st-s3 NAME:ld-s3 ...   (results in $OUT/results.jsonl).
# IOBENCH session 4 device run: SeaweedFS pinned to cores 0-7, the benches to cores 8-15.
# Usage: run.sh PLAN  where PLAN is a list of "BINARY:BENCH" items run in order;
# BENCH is one of st-s3, st-local, ld-s3, ld-local, st-s3-c8, st-s3-c1, st-local-c1 (-cN: N writers),
# ld-s3-views, ld-s3-offsets (the loader bench with --binary-layout; binaries from session 5 on),
# in-s3 (bench ingest: CHAINS chains, THREADS to local disk, then all bench cores to S3);
# $EXTRA is appended to every storage bench's arguments.
# Session 5 (WRITE) added the one-writer benches and EXTRA.
set -u
D=$(cd "$(dirname "$0")" && pwd)
B=/tmp/iob; mkdir -p $B
O=${OUT:-/tmp/out}; mkdir -p $O
echo "== tools: $(for t in zstd xz curl taskset python3; do command -v $t >/dev/null && echo -n "$t "; done)"
echo "== nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo); $(uname -r)"; free -g | head -2; df -h /tmp | tail -1
unxz_to() { if command -v xz >/dev/null; then xz -dc "$1" > "$2"; else python3 -c 'import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$1" "$2"; fi; chmod +x "$2"; }
for f in $D/*.xz; do unxz_to $f $B/$(basename $f .xz) & done; wait
ls -la $B
if command -v taskset >/dev/null; then PIN=(taskset -c)
else PIN=(python3 -c 'import os,sys; a,b=map(int,sys.argv[1].split("-")); os.sched_setaffinity(0,range(a,b+1)); os.execvp(sys.argv[2],sys.argv[2:])'); fi
SP=${SP:-8333}
echo "== pin check: $("${PIN[@]}" ${BENCH_CPUS:-8-15} grep Cpus_allowed_list /proc/self/status) nproc=$("${PIN[@]}" ${BENCH_CPUS:-8-15} nproc)"
mkdir -p $B/w
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "${PIN[@]}" ${SRV_CPUS:-0-7} $B/weed server -dir=$B/w -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port=$((SP+1000)) -volume.port=$((SP+2000)) -filer.port=$((SP+3000)) -s3 -s3.port=$SP -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=50 \
  > $O/weed.log 2>&1 &
WEED=$!
export AWS_ENDPOINT_URL=http://127.0.0.1:$SP AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=scalefold AWS_SECRET_ACCESS_KEY=scalefold AWS_REGION=us-east-1
bucket_ok() { python3 - <<'PY'
import urllib.request, sys, os
try:
    urllib.request.urlopen(urllib.request.Request(os.environ["AWS_ENDPOINT_URL"]+"/bench", method="PUT"), timeout=2).read()
except Exception as e:
    pass
try:
    r = urllib.request.urlopen(os.environ["AWS_ENDPOINT_URL"]+"/bench", timeout=2); sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}
t0=$(date +%s.%N)
for i in $(seq 1 120); do bucket_ok && break; sleep 0.5; done
echo "== S3 ready after $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s (try $i)"
ticks() { awk '{print $14+$15}' /proc/$WEED/stat 2>/dev/null || echo 0; }
n=0
for item in "$@"; do
  bin=${item%%:*}; bench=${item#*:}; n=$((n+1))
  case $bench in
    st-s3) args="bench storage --url s3://bench/st$n --size-mib ${MIB:-1100} --json";;
    st-s3-c8) args="bench storage --url s3://bench/st$n --size-mib ${MIB:-1100} --concurrency 8 --read-concurrency 16 --json";;
    st-local) args="bench storage --url /tmp/st$n --size-mib ${MIB:-1100} --json";;
    st-s3-c1) args="bench storage --url s3://bench/st$n --size-mib ${MIB:-1100} --concurrency 1 --json";;
    st-local-c1) args="bench storage --url /tmp/st$n --size-mib ${MIB:-1100} --concurrency 1 --json";;
    ld-s3) args="bench loader --skip-windows --s3-url s3://bench/ld$n --s3-mib ${MIB:-1024} --json";;
    ld-local) args="bench loader --skip-windows --s3-url /tmp/ld$n --s3-mib ${MIB:-1024} --json";;
    ld-s3-views) args="bench loader --skip-windows --s3-url s3://bench/ld$n --s3-mib ${MIB:-1024} --json --binary-layout views";;
    ld-s3-offsets) args="bench loader --skip-windows --s3-url s3://bench/ld$n --s3-mib ${MIB:-1024} --json --binary-layout offsets";;
    in-s3) args="bench ingest --chains ${CHAINS:-4000} --corpus /tmp/in-corpus --threads ${THREADS:-8} --remote-out s3://bench/in$n --json";;
    *) echo "unknown bench $bench"; continue;;
  esac
  case $bench in st-*) args="$args ${EXTRA:-}";; esac
  w0=$(ticks); s=$(date +%s.%N)
  line=$( { TIMEFORMAT='%U %S'; time "${PIN[@]}" ${BENCH_CPUS:-8-15} $B/$bin $args 2>>$O/log.txt; } 2>$B/t )
  w1=$(ticks); e=$(date +%s.%N)
  echo "{\"n\":$n,\"bin\":\"$bin\",\"bench\":\"$bench\",\"wall\":$(python3 -c "print(round($e-$s,2))"),\"client_cpu\":\"$(cat $B/t)\",\"weed_cpu_s\":$(awk "BEGIN{print ($w1-$w0)/100}"),\"r\":${line:-null}}" | tee -a $O/results.jsonl
  rm -rf /tmp/st$n /tmp/ld$n
done
kill $WEED; wait $WEED 2>/dev/null
echo "== done"
