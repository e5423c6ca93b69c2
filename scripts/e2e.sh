#!/usr/bin/env bash
# The end-to-end suites that reach inside a host-process webhook (tests/e2e.rs,
# tests/tls_auto.rs) against a real cluster with a kubelet node, the hostile-client tests
# (tests/hostile.rs) against the release server, then the webhook installed in a second,
# fresh cluster as users install it (tests/in_cluster.rs, then the seed's flows on it:
# tests/node.rs), and with the Helm chart in a third (tests/helm_cluster.rs): builds
# the cluster (once per version, cached outside the checkout), the release binary and the
# webhook's image, starts each cluster in a temporary directory,
# runs the suites, stops everything whatever happens, and fails if the host is not as it was.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cp="$root/scripts/control-plane.sh"
cd "$root"

bash "$cp" build >/dev/null
cargo build --release --locked
bash scripts/link-order.sh check
host=$(mktemp -d -t sidecar-injector-host.XXXXXX)
bash scripts/host-state.sh >"$host/before"
dir=
# stop_cluster RC: stops the cluster in $dir, if any; its logs are kept when RC says it failed.
stop_cluster() {
    [[ -n $dir ]] || return 0
    local start=$SECONDS
    bash "$cp" stop "$dir"
    echo "e2e: cluster and node stopped in $((SECONDS - start)) s" >&2
    if [[ $1 -ne 0 && -f $dir/kube-apiserver.log ]]; then
        echo "e2e: failed; control plane logs kept in $dir" >&2
    else
        rm -rf "$dir"
    fi
    dir=
}
finish() {
    local rc=$?
    stop_cluster "$rc"
    bash scripts/host-state.sh >"$host/after"
    if ! diff -u "$host/before" "$host/after" >&2; then
        echo "e2e: FAILED: the host is not as it was before the clusters started (diff above)" >&2
        rc=1
    fi
    rm -rf "$host"
    exit "$rc"
}
trap finish EXIT

# on_cluster IMAGE TEST...: the suites TEST... on a fresh cluster, stopped afterwards. With
# IMAGE=webhook, the webhook's image is built from the Dockerfile and loaded into the node
# (tests/in_cluster.rs installs it with deploy/); without it, deploy/'s Deployment never
# starts a replica (its image pull fails at the local registry), so the suites' webhook is
# the release binary on the host alone.
on_cluster() {
    local image=$1 started=$SECONDS tests=()
    shift
    for t in "$@"; do tests+=(--test "$t"); done
    dir=$(mktemp -d -t sidecar-injector-e2e.XXXXXX)
    bash "$cp" start "$dir"
    echo "e2e: cluster and node up in $((SECONDS - started)) s" >&2
    if [[ $image == webhook ]]; then
        bash scripts/images.sh webhook "$dir/images"
        bash "$cp" load "$dir" "$dir/images/webhook.tar"
    fi
    SIDECAR_E2E_ENV="$dir/env" SIDECAR_E2E_BIN="$root/target/release/sidecar-injector" \
        cargo test --locked --features e2e "${tests[@]}" -- --test-threads=1
    stop_cluster 0
}

rm -f target/e2e/tls-auto.md target/e2e/in-cluster.md
on_cluster none e2e tls_auto hostile
on_cluster webhook in_cluster node
on_cluster webhook helm_cluster
cat target/e2e/latency.md target/e2e/tls-auto.md target/e2e/in-cluster.md
