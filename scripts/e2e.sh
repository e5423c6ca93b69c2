#!/usr/bin/env bash
# The end-to-end suite (tests/e2e.rs) against a real control plane, and the hostile-client
# tests (tests/hostile.rs) against the release server: builds the control plane (once per
# version, cached outside the checkout) and the release binary, starts it in a temporary
# directory, runs the suite, and stops everything whatever happens.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cp="$root/scripts/control-plane.sh"
cd "$root"

bash "$cp" build >/dev/null
cargo build --release --locked
bash scripts/link-order.sh check
dir=$(mktemp -d -t sidecar-injector-e2e.XXXXXX)
finish() {
    local rc=$?
    bash "$cp" stop "$dir"
    if [[ $rc -ne 0 && -f $dir/kube-apiserver.log ]]; then
        echo "e2e: failed; control plane logs kept in $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$rc"
}
trap finish EXIT
bash "$cp" start "$dir"
rm -f target/e2e/tls-auto.md
SIDECAR_E2E_ENV="$dir/env" SIDECAR_E2E_BIN="$root/target/release/sidecar-injector" \
    cargo test --locked --features e2e --test e2e --test tls_auto --test hostile -- --test-threads=1
cat target/e2e/latency.md target/e2e/tls-auto.md
