#!/usr/bin/env bash
# Load benchmark: this project's release server against ../shared/bench/ceiling (a no-op
# axum + rustls server answering a fixed AdmissionReview) under the same h2load load, over
# HTTP/2 (streams on 1 or 4 connections) and HTTP/1.1 keep-alive (kube-apiserver's protocol
# for webhooks: one connection per request in flight), at 1, 8 and 64 in flight, each
# measured ROUNDS times, alternating.
# The project logs at PROJECT_LOG (default info, its own default: one line per review) in
# PROJECT_LOG_FORMAT (default json, as deploy/ runs it) to a pipe that a reader drains (in a
# container, stderr is a pipe the runtime reads; PROJECT_LOG_SINK=null: /dev/null), and runs
# WORKERS threads (default 1: as deployed, where deploy/ gives it one CPU and the runtime
# sizes itself to that; the ceiling runs as shipped, one per core).
# Prints one markdown table per round and the ratios project/ceiling. 127.0.0.1 only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_DIR:-$root/../shared}/bench
out=${BENCH_OUT:-$root/target/bench}
rounds=${ROUNDS:-2}
port=18443
url=https://127.0.0.1:$port/mutate
body=$bench/fixtures/pod-create-realistic.json
mkdir -p "$out"
: >"$out/ready.txt"

command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
(cd "$root" && cargo build --release --locked --quiet)
# From its own folder, so that this project's .cargo/config.toml (allocator and linker flags)
# does not apply: the yardstick is built as it is shipped.
(cd "$bench/ceiling" && CARGO_TARGET_DIR=$root/target/ceiling cargo build --release --quiet)
ours=$root/target/release/sidecar-injector
ceiling=$root/target/ceiling/release/ceiling
bash "$bench/gen-cert.sh" "$out/certs" >/dev/null

# The project as deploy/ runs it (exec: the measured PID is the server's).
project() {
  RUST_LOG=${PROJECT_LOG:-info} exec "$ours" serve --log-format "${PROJECT_LOG_FORMAT:-json}" \
    --addr 127.0.0.1:$port --metrics-addr 127.0.0.1:0 --probe-addr 127.0.0.1:0 --workers "${WORKERS:-1}" \
    --tls-cert "$out/certs/tls.crt" --tls-key "$out/certs/tls.key"
}
srv=""
stop() { [ -z "$srv" ] || { kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; srv=""; }; }
trap stop EXIT
wait_port() {
  for _ in $(seq 1000); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0; sleep 0.005; done
  echo "bench.sh: server did not listen on $port" >&2; return 1
}

for round in $(seq "$rounds"); do
  : >"$out/round$round.txt"
  for proto in ${PROTOCOLS:-h2 h1}; do
  h1=(); [ "$proto" = h1 ] && h1=(--h1)
  for server in project ceiling; do
    if [ $server = project ]; then
      start=$(date +%s%N)
      if [ "${PROJECT_LOG_SINK:-pipe}" = pipe ]; then
        project 2> >(cat >/dev/null) &
      else
        project 2>/dev/null &
      fi
      srv=$!
      wait_port
      echo "project ready in $(( ($(date +%s%N) - start) / 1000000 )) ms" >>"$out/ready.txt"
    else
      "$ceiling" --addr 127.0.0.1:$port --cert "$out/certs/tls.crt" --key "$out/certs/tls.key" 2>/dev/null &
      srv=$!
      wait_port
    fi
    bash "$bench/load.sh" "$url" "$body" --pid "$srv" --label "$server" "${h1[@]}" | tee -a "$out/round$round.txt"
    stop
  done
  done
done

echo
python3 "$bench/table.py" "$out"/round*.txt
echo
python3 - "$out"/round*.txt <<'PY'
import re, sys
rows = {}
for path in sys.argv[1:]:
    for line in open(path):
        m = re.match(r"^(\S+) proto=(\S+) conc=(\d+) (.*)$", line.strip())
        if m:
            kv = dict(p.split("=", 1) for p in m[4].split() if "=" in p)
            rows.setdefault((m[2], int(m[3]), m[1]), []).append(kv)
def avg(xs, k):
    v = [float(x[k]) for x in xs if x.get(k) not in (None, "NA")]
    return sum(v) / len(v) if v else float("nan")
print("| protocol | conc | req/s ratio | p50 ratio | p99 ratio | CPU/req ratio | project peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
for proto, conc in sorted({(pr, c) for pr, c, _ in rows}):
    p, c = rows.get((proto, conc, "project"), []), rows.get((proto, conc, "ceiling"), [])
    r = lambda k: avg(p, k) / avg(c, k)
    rss = max(float(x.get("vmhwm_kB", 0)) for x in p) / 1024
    print(f"| {proto} | {conc} | {r('req/s'):.2f} | {r('p50_ms'):.2f} | {r('p99_ms'):.2f} | {r('srv_cpu_us/req'):.2f} | {rss:.1f} |")
PY
cat "$out/ready.txt"
