#!/usr/bin/env bash
# Helm v4, built from its Go module (helm.sh/helm/v4, pinned with its dependency graph in
# scripts/helm/go.mod and go.sum) once per go.sum into the same cache as the control plane;
# prints the binary's path. The chart's tests (tests/deploy.rs, tests/helm_cluster.rs) use it.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=v4.3.2
CACHE_ROOT="${SIDECAR_INJECTOR_CP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-injector/control-plane}"
command -v go >/dev/null || { echo "helm.sh: Go >= 1.26 is required (go not found on PATH)" >&2; exit 1; }
sum="$(sha256sum "$HERE/helm/go.sum" | cut -c1-12)"
out="$CACHE_ROOT/helm-$VERSION-$sum"
if [[ ! -x $out/helm ]]; then
    echo "helm.sh: building Helm $VERSION into $out (about 2 min on 2 cores)" >&2
    rm -rf "$out.partial.$$"
    mkdir -p "$out.partial.$$"
    (cd "$HERE/helm" && CGO_ENABLED=0 go build -mod=readonly -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$VERSION" \
        -o "$out.partial.$$/helm" helm.sh/helm/v4/cmd/helm) || { echo "helm.sh: build failed" >&2; exit 1; }
    rm -rf "$out"
    mv "$out.partial.$$" "$out"
fi
echo "$out/helm"
