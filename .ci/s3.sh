# Start and stop a SeaweedFS S3 server on loopback for tests. Sourced by .ci/run.
# s3_start exports AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, credentials, AWS_REGION and
# SCALEFOLD_TEST_S3_BUCKET (an empty bucket it creates); s3_stop kills the server.

# A free loopback port P in 20000..45000 with P+10000 free too (SeaweedFS puts gRPC there).
free_port() {
  python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 45000)
    if free(p) and free(p + 10000):
        print(p); break
PY
}

s3_start() {
  S3_DIR=$(mktemp -d)
  local s3 master volume filer
  s3=$(free_port); master=$(free_port); volume=$(free_port); filer=$(free_port)
  echo "== starting SeaweedFS S3 on 127.0.0.1:$s3 (data in $S3_DIR)"
  # Credentials in weed's own environment would turn on S3 authentication: keep them out.
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
    weed server -dir="$S3_DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
    -s3 -s3.port="$s3" -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=50 \
    >"$S3_DIR/weed.log" 2>&1 &
  S3_PID=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3"
  export AWS_ALLOW_HTTP=true
  export AWS_ACCESS_KEY_ID=scalefold
  export AWS_SECRET_ACCESS_KEY=scalefold
  export AWS_REGION=us-east-1
  export SCALEFOLD_TEST_S3_BUCKET=scalefold-test
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null -X PUT "$AWS_ENDPOINT_URL/$SCALEFOLD_TEST_S3_BUCKET" &&
       curl -s -o /dev/null -w '%{http_code}' "$AWS_ENDPOINT_URL/$SCALEFOLD_TEST_S3_BUCKET" | grep -q 200; then
      echo "== S3 ready, bucket $SCALEFOLD_TEST_S3_BUCKET"
      return 0
    fi
    sleep 0.5
  done
  echo "SeaweedFS did not come up; its log:" >&2
  tail -50 "$S3_DIR/weed.log" >&2
  return 1
}

s3_stop() {
  if [ -n "${S3_PID:-}" ]; then
    kill "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
  fi
  [ -n "${S3_DIR:-}" ] && rm -rf "$S3_DIR"
  return 0
}
