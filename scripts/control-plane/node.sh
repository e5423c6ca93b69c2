# One kubelet node for the control plane (sourced by control-plane.sh): containerd, runc and
# Debian's CNI plugins, a local registry, and the kubelet, set up as ../shared/NODE.md
# measured on these machines. Nothing of it touches the host:
#  - like a kind node, the kubelet, containerd, the registry and the pods share the node's own
#    network namespace ($NODE_NETNS), which has no route out: the kubelet probes pods and
#    proxies `kubectl exec` to containerd's streaming server there; the control plane on
#    the host's 127.0.0.1 is reached, and reaches in, only through control-plane/network
#    (a forwarder on the `kubernetes` Service's 10.96.0.1:443 and on the apiserver's own
#    127.0.0.1 port, and a dialer for the apiserver's egress, each joined by a Unix socket);
#  - containerd and the kubelet run in a private mount namespace (held by a `sleep`) where the
#    host-wide sysctl files the kubelet writes are plain files, the fixed paths they use
#    (/run/containerd, /var/lib/kubelet, ...) are tmpfs, and /etc/resolv.conf names no
#    server: every volume, overlay and netns mount of the node lives and dies there;
#  - pods get their network from the `bridge` plugin in that namespace: no bridge, veth,
#    route or rule in the host's;
#  - every registry name is served by the registry on 127.0.0.1 (containerd's hosts
#    config, a catch-all included) or fails to resolve locally: no pull leaves the machine;
#  - pods' cgroups are under /$NODE_NAME in each hierarchy, removed at stop.
# Two nodes cannot run at once (containerd 1.6 and the kubelet keep fixed paths): start
# removes what an earlier, killed node left, found through /run/$NODE_NAME.

NODE_NAME=sidecar-injector-node
NODE_NETNS=$NODE_NAME
NODE_MARK=/run/$NODE_NAME
POD_SUBNET=10.88.0.0/16
# The node's InternalIP (the kubelet refuses a loopback one), on the namespace's lo.
NODE_IP=10.87.0.1
# The `kubernetes` Service's ClusterIP: the pods' way to the apiserver.
KUBERNETES_SERVICE_IP=10.96.0.1
# The files the kubelet writes host-wide values into (NODE.md, setting 3).
NODE_SYSCTLS="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"
# Fixed paths of containerd 1.6 (pods' netns files too), the kubelet and libcni, each a tmpfs
# in the node's mount namespace.
NODE_FIXED_DIRS="/run/containerd /run/netns /var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni"

node_cgroup_dirs() { # every hierarchy's copy of the node's cgroup root
    local h
    for h in /sys/fs/cgroup/*/; do
        [[ -d $h$NODE_NAME ]] && echo "$h$NODE_NAME"
    done
}

# Ends every process in the node's cgroups (containers outlive their shims) and removes them.
node_cgroups_remove() {
    local d pid round
    for round in $(seq 50); do
        local left=0
        for d in $(node_cgroup_dirs); do
            while read -r pid; do
                [[ -n $pid ]] && { kill -KILL "$pid" 2>/dev/null || true; left=1; }
            done < <(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
        done
        ((left)) || break
        sleep 0.1
    done
    for d in $(node_cgroup_dirs); do
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

# Stops the node whose state is under $1 (also half-started, also one left by a killed run).
node_stop() {
    local dir=$1 node=$1/node pid
    if [[ -f $node/pids ]]; then
        while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done < <(tac "$node/pids")
        sleep 0.5
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$node/pids"
    fi
    # Shims (and anything else) started on this node's files: their command lines name them.
    pkill -KILL -f -- "$node/" 2>/dev/null || true
    node_cgroups_remove
    # Once no process is left in it, the private mount namespace and all its mounts are gone.
    if [[ -e /run/netns/$NODE_NETNS ]]; then
        ip netns pids "$NODE_NETNS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns delete "$NODE_NETNS"
    fi
    # `ip netns add` made /run/netns a mount point if it was none.
    if [[ -f $node/created-mounts ]]; then
        tac "$node/created-mounts" | xargs -r umount 2>/dev/null || true
    fi
    if [[ -f $node/created-dirs ]]; then
        tac "$node/created-dirs" | xargs -r rmdir 2>/dev/null || true
    fi
    rm -f "$node/pids" "$node/created-dirs" "$node/created-mounts"
    if [[ -f $NODE_MARK/dir && $(cat "$NODE_MARK/dir") == "$dir" ]]; then rm -rf "$NODE_MARK"; fi
}

# node_run NAME CMD...: started in its own session, in the node's mount and network namespaces.
node_run() {
    local name=$1
    shift
    setsid nsenter -t "$NODE_HOLDER" -m --net="/run/netns/$NODE_NETNS" -- "$@" \
        >"$NODE_DIR/$name.log" 2>&1 </dev/null &
    echo "$!" >>"$NODE_DIR/pids"
}

# node_net CMD...: CMD in the node's network namespace only.
node_net() { nsenter --net="/run/netns/$NODE_NETNS" -- "$@"; }

# The namespace holder: covers what the node must not change on the host, then sleeps.
node_namespace() {
    local f d
    for f in $NODE_SYSCTLS; do cp "/proc/sys/$f" "$NODE_DIR/sysctl/${f//\//.}"; done
    printf 'nameserver 127.0.0.1\noptions attempts:1 timeout:1\n' >"$NODE_DIR/resolv.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$NODE_DIR/hosts"
    for d in $NODE_FIXED_DIRS; do
        [[ -d $d ]] || { mkdir -p "$d" && echo "$d" >>"$NODE_DIR/created-dirs"; }
    done
    touch "$NODE_DIR/node.netns"
    cat >"$NODE_DIR/namespace.sh" <<EOF
set -e
# The node's network namespace at a path of its own, before /run/netns is covered.
mount --bind "/run/netns/$NODE_NETNS" "$NODE_DIR/node.netns"
for f in $NODE_SYSCTLS; do mount --bind "$NODE_DIR/sysctl/\${f//\\//.}" "/proc/sys/\$f"; done
mount --bind "$NODE_DIR/resolv.conf" /etc/resolv.conf
mount --bind "$NODE_DIR/hosts" /etc/hosts
for d in $NODE_FIXED_DIRS; do mount -t tmpfs -o mode=0755 tmpfs "\$d"; done
touch "$NODE_DIR/namespace-ready"
exec sleep infinity
EOF
    setsid unshare --mount --propagation slave -- bash "$NODE_DIR/namespace.sh" \
        >"$NODE_DIR/namespace.log" 2>&1 </dev/null &
    NODE_HOLDER=$!
    echo "$NODE_HOLDER" >>"$NODE_DIR/pids"
    wait_for node/namespace 10 test -e "$NODE_DIR/namespace-ready"
}

node_network() {
    : >"$NODE_DIR/created-dirs"
    : >"$NODE_DIR/created-mounts"
    [[ -d /run/netns ]] || echo /run/netns >>"$NODE_DIR/created-dirs"
    mountpoint -q /run/netns 2>/dev/null || echo /run/netns >>"$NODE_DIR/created-mounts"
    ip netns add "$NODE_NETNS"
    node_net ip link set lo up
    node_net ip addr add "$NODE_IP/32" dev lo
    node_net ip addr add "$KUBERNETES_SERVICE_IP/32" dev lo
    mkdir -p "$NODE_DIR/cni/bin" "$NODE_DIR/cni/conf" "$NODE_DIR/cni/ipam"
    # The real bridge plugin, run inside the node's network namespace.
    printf '#!/bin/sh\nexec nsenter --net=%s /usr/lib/cni/bridge "$@"\n' "$NODE_DIR/node.netns" \
        >"$NODE_DIR/cni/bin/bridge"
    chmod 0755 "$NODE_DIR/cni/bin/bridge"
    ln -sf /usr/lib/cni/host-local /usr/lib/cni/loopback "$NODE_DIR/cni/bin/"
    cat >"$NODE_DIR/cni/conf/10-pods.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "pods", "plugins": [{
  "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]],
           "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$NODE_DIR/cni/ipam"}}]}
EOF
}

# node_paths BIN: the two ways between the node's namespace and the host's (see the top).
node_paths() {
    node_run dialer "$1/network" dialer "$DIR/node-dialer.sock"
    node_run apiserver-forward "$1/network" forward "unix:$DIR/apiserver.sock" \
        "tcp:$KUBERNETES_SERVICE_IP:443" "tcp:${APISERVER_URL#https://}"
    wait_for node/dialer 10 test -S "$DIR/node-dialer.sock"
}

node_registry() {
    NODE_REGISTRY=127.0.0.1:$(free_port)
    cat >"$NODE_DIR/registry.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $NODE_DIR/registry}, delete: {enabled: true}}
http: {addr: $NODE_REGISTRY}
EOF
    node_run registry docker-registry serve "$NODE_DIR/registry.yml"
    wait_for node/registry 30 node_net curl -sf "http://$NODE_REGISTRY/v2/"
    # Every registry host, and any other (_default), is this registry; nothing falls back.
    local host
    for host in docker.io registry.k8s.io gcr.io quay.io ghcr.io _default; do
        mkdir -p "$NODE_DIR/certs.d/$host"
        cat >"$NODE_DIR/certs.d/$host/hosts.toml" <<EOF
server = "http://$NODE_REGISTRY"
[host."http://$NODE_REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
    done
}

node_containerd() {
    cat >"$NODE_DIR/containerd.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$NODE_DIR/containerd.sock"
[ttrpc]
  address = "$NODE_DIR/containerd.sock.ttrpc"
[debug]
  address = "$NODE_DIR/containerd-debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$NODE_DIR/cni/bin"
    conf_dir = "$NODE_DIR/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE_DIR/certs.d"
EOF
    node_run containerd containerd --config "$NODE_DIR/containerd.toml"
    wait_for node/containerd 30 ctr --address "$NODE_DIR/containerd.sock" version
}

# node_load TAR REF: an image tar into containerd's CRI namespace and into the registry.
node_load() {
    local ctr=(ctr --address "$NODE_DIR/containerd.sock" -n k8s.io) path
    "${ctr[@]}" images import "$1" >/dev/null
    path=${2#*/}
    # ctr pushes from its own process: the registry listens in the node's namespace.
    node_net "${ctr[@]}" images push --plain-http "$NODE_REGISTRY/$path" "$2" >/dev/null
}

node_untainted() { # node_untainted BIN: the node carries no taint (not-ready is lifted)
    [[ -z $("$1/kubectl" --kubeconfig "$DIR/kubeconfig" get node localhost -o jsonpath='{.spec.taints}') ]]
}

node_kubelet() {
    local bin=$1 kport hport h
    kport=$(free_port)
    hport=$(free_port)
    for h in /sys/fs/cgroup/*/; do mkdir -p "$h$NODE_NAME"; done
    sign kubelet "/O=system:nodes/CN=system:node:localhost" ca "extendedKeyUsage=clientAuth"
    kubeconfig "$NODE_DIR/kubelet.kubeconfig" kubelet
    mkdir -p "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs" "$NODE_DIR/volume-plugins"
    cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_NAME
failSwapOn: false
makeIPTablesUtilChains: false
hairpinMode: none
address: 127.0.0.1
port: $kport
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
containerRuntimeEndpoint: unix://$NODE_DIR/containerd.sock
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $NODE_DIR/volume-plugins
resolvConf: $NODE_DIR/resolv.conf
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
    # The apiserver reaches the kubelet (logs, exec, attach) by the node's name, localhost.
    echo "localhost:$kport node:127.0.0.1:$kport" >>"$DIR/egress-routes"
    node_run kubelet "$bin/kubelet" --config "$NODE_DIR/kubelet.yaml" \
        --kubeconfig "$NODE_DIR/kubelet.kubeconfig" --hostname-override localhost --node-ip "$NODE_IP" \
        --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet/pki"
    wait_for node/kubelet 60 "$bin/kubectl" --kubeconfig "$DIR/kubeconfig" wait node/localhost \
        --for=condition=Ready --timeout=1s
    wait_for node/kubelet 30 node_untainted "$bin"
}

# node_start BIN IMAGES: the node, with the images in IMAGES/refs loaded.
node_start() {
    local bin=$1 images=$2 ref tar old
    if [[ -f $NODE_MARK/dir ]]; then
        old=$(cat "$NODE_MARK/dir")
        echo "control-plane: removing the node an earlier run left ($old)" >&2
        node_stop "$old"
    fi
    node_stop "$DIR"
    mkdir -p "$NODE_MARK"
    echo "$DIR" >"$NODE_MARK/dir"
    NODE_DIR=$DIR/node
    mkdir -p "$NODE_DIR/sysctl"
    : >"$NODE_DIR/pids"
    node_network
    node_namespace
    node_paths "$bin"
    node_registry
    node_containerd
    while read -r ref tar; do node_load "$images/$tar" "$ref"; done <"$images/refs"
    node_kubelet "$bin"
}
