#!/usr/bin/env bash
# The end-to-end suites (tests/e2e.rs, tests/tls_auto.rs, tests/node.rs) against a real
# cluster with a kubelet node, and the hostile-client tests (tests/hostile.rs) against the
# release server: builds the cluster (once per version, cached outside the checkout), the
# release binary and the webhook's image, starts the cluster in a temporary directory, runs
# the suites, stops everything whatever happens, and fails if the host is not as it was.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cp="$root/scripts/control-plane.sh"
cd "$root"

bash "$cp" build >/dev/null
cargo build --release --locked
bash scripts/link-order.sh check
dir=$(mktemp -d -t sidecar-injector-e2e.XXXXXX)
bash scripts/host-state.sh >"$dir/host.before"
finish() {
    local rc=$?
    local start=$SECONDS
    bash "$cp" stop "$dir"
    echo "e2e: cluster and node stopped in $((SECONDS - start)) s" >&2
    bash scripts/host-state.sh >"$dir/host.after"
    if ! diff -u "$dir/host.before" "$dir/host.after" >&2; then
        echo "e2e: FAILED: the host is not as it was before the cluster started (diff above)" >&2
        rc=1
    fi
    if [[ $rc -ne 0 && -f $dir/kube-apiserver.log ]]; then
        echo "e2e: failed; control plane logs kept in $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$rc"
}
trap finish EXIT
started=$SECONDS
bash "$cp" start "$dir"
echo "e2e: cluster and node up in $((SECONDS - started)) s" >&2
bash scripts/images.sh webhook "$dir/images"
bash "$cp" load "$dir" "$dir/images/webhook.tar"
rm -f target/e2e/tls-auto.md
SIDECAR_E2E_ENV="$dir/env" SIDECAR_E2E_BIN="$root/target/release/sidecar-injector" \
    cargo test --locked --features e2e --test e2e --test tls_auto --test node --test hostile -- --test-threads=1
cat target/e2e/latency.md target/e2e/tls-auto.md
