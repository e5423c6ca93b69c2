#!/usr/bin/env bash
# A Go tool the tests use, built from its Go module (pinned with its dependency graph in
# scripts/tools/NAME/go.mod and go.sum) once per go.sum into the same cache as the control
# plane; prints the binary's path.
#
#   tool.sh helm       Helm v4.3.2 (helm.sh/helm/v4): the chart's tests
#   tool.sh promtool   promtool v0.316.0 (github.com/prometheus/prometheus): the alerts' tests
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE_ROOT="${SIDECAR_INJECTOR_CP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-injector/control-plane}"
die() { echo "tool.sh: $*" >&2; exit 1; }
case "${1:-}" in
helm) pkg=helm.sh/helm/v4/cmd/helm ldflags="-X helm.sh/helm/v4/internal/version.version=v4.3.2" ;;
promtool) pkg=github.com/prometheus/prometheus/cmd/promtool ldflags="" ;;
*) die "usage: $0 helm | promtool" ;;
esac
name=$1
command -v go >/dev/null || die "Go >= 1.26 is required (go not found on PATH)"
sum="$(sha256sum "$HERE/tools/$name/go.sum" | cut -c1-12)"
out="$CACHE_ROOT/$name-$sum"
if [[ ! -x $out/$name ]]; then
    echo "tool.sh: building $name into $out (a few minutes on 2 cores, once)" >&2
    rm -rf "$out.partial.$$"
    mkdir -p "$out.partial.$$"
    (cd "$HERE/tools/$name" && CGO_ENABLED=0 go build -mod=readonly -trimpath \
        -ldflags "-s -w $ldflags" -o "$out.partial.$$/$name" "$pkg") || die "$name build failed"
    rm -rf "$out"
    mv "$out.partial.$$" "$out"
fi
echo "$out/$name"
