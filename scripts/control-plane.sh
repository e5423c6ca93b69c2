#!/usr/bin/env bash
# A real Kubernetes cluster for the end-to-end suite: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler built from their Go modules, started on
# 127.0.0.1, and one kubelet node with containerd and runc that really runs pods
# (control-plane/node.sh; ../shared/NODE.md has the facts it rests on).
#
#   control-plane.sh build         build (once per version) into the cache; prints the bin dir
#   control-plane.sh start DIR     start everything with state under DIR; returns when the
#                                  node is Ready and untainted (first removing what an earlier,
#                                  killed run left behind)
#   control-plane.sh load DIR TAR  an OCI or docker image tar into the node and its registry
#   control-plane.sh stop DIR      stop what `start DIR` started (also after a failed start), and
#                                  any process whose command line names a file under DIR
#
# After start, DIR/env (shell syntax) has KUBECONFIG, APISERVER_URL, BIN_DIR, EGRESS_ROUTES,
# WEBHOOK_CLIENT_CA (the CA of the certificate the apiserver presents to webhooks),
# CLUSTER_CA, NODE_NETNS (the node's network namespace: `ip netns exec $NODE_NETNS curl
# http://POD_IP:8080` reaches a pod), CONTAINERD_ADDRESS and REGISTRY. The apiserver's calls
# to Services (webhooks) and to the kubelet go through DIR/egress.sock (control-plane/network):
# to a Service's ready pods, as kube-proxy would send them, unless a line
# "CLUSTER_IP:PORT 127.0.0.1:PORT" in EGRESS_ROUTES sends them to a server on the host.
# The apiserver traces every request; its "Call mutating webhook" spans are appended to
# WEBHOOK_SPANS (JSON lines, see kubernetes/span-sink/main.go).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=control-plane/node.sh
source "$HERE/control-plane/node.sh"
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
CACHE_ROOT="${SIDECAR_INJECTOR_CP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-injector/control-plane}"
SERVICE_CIDR=10.96.0.0/16

die() { echo "control-plane: $*" >&2; exit 1; }

cache_key() {
    # The versions plus the exact dependency graph: a changed go.sum is a new build.
    local sum
    sum="$(cat "$HERE/control-plane/kubernetes/go.sum" "$HERE/control-plane/etcd/go.sum" | sha256sum | cut -c1-12)"
    echo "k8s-$K8S_VERSION-etcd-$ETCD_VERSION-$sum"
}

bin_dir() { echo "$CACHE_ROOT/$(cache_key)/bin"; }

build_tool() { # build_tool OUT NAME SRC_DIR
    # Small and ours: rebuilt whenever its source changes.
    local out=$1 name=$2 src=$3 sum
    sum="$(sha256sum "$src/main.go" | cut -c1-12)"
    [[ -x $out/$name-$sum ]] && return
    (cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/$name-$sum" .) ||
        die "$name build failed"
    ln -sf "$name-$sum" "$out/$name"
}

build() {
    command -v go >/dev/null || die "Go >= 1.26 is required to build the control plane (go not found on PATH)"
    local out tmp minor
    out="$(bin_dir)"
    if ! [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler &&
        -x $out/kubelet && -x $out/kubectl && -x $out/etcd ]]; then
        tmp="$out.partial.$$"
        rm -rf "$tmp"
        mkdir -p "$tmp"
        minor="${K8S_VERSION#v1.}"
        minor="${minor%%.*}"
        local vpkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version ldflags="-s -w"
        for p in $vpkg $cpkg; do
            ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
            ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
        done
        echo "control-plane: building Kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $out (first time: 10-25 min on 2 cores)" >&2
        (cd "$HERE/control-plane/etcd" &&
            CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) ||
            die "etcd build failed"
        (cd "$HERE/control-plane/kubernetes" &&
            CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/" \
                k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
                k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl) ||
            die "Kubernetes build failed"
        rm -rf "$out"
        mv "$tmp" "$out"
    fi
    build_tool "$out" network "$HERE/control-plane/network"
    build_tool "$out" span-sink "$HERE/control-plane/kubernetes/span-sink"
    echo "$out"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# sign NAME SUBJECT CA [EXT]: a P-256 key and a certificate signed by CA (CA itself when CA=self).
sign() {
    local name=$1 subj=$2 ca=$3 ext=${4:-} pki=$DIR/pki
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
    chmod 600 "$pki/$name.key"
    if [[ $ca == self ]]; then
        openssl req -x509 -new -key "$pki/$name.key" -subj "$subj" -days 3650 -out "$pki/$name.crt" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    else
        openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "$ext" >"$pki/$name.ext"
        openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
            -days 3650 -out "$pki/$name.crt" -extfile "$pki/$name.ext" 2>/dev/null
    fi
}

kubeconfig() { # kubeconfig FILE USER-CERT-NAME
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster:
      server: $APISERVER_URL
      certificate-authority: $DIR/pki/ca.crt
users:
  - name: $2
    user:
      client-certificate: $DIR/pki/$2.crt
      client-key: $DIR/pki/$2.key
contexts:
  - name: e2e
    context: {cluster: e2e, user: $2}
current-context: e2e
EOF
}

# run NAME CMD...: in its own session (so stop can end it and anything it forks), logging to DIR.
run() {
    local name=$1
    shift
    setsid "$@" >"$DIR/$name.log" 2>&1 </dev/null &
    echo "$! $name" >>"$DIR/pids"
}

wait_for() { # wait_for WHAT SECONDS CMD...
    local what=$1 deadline=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "control-plane: $what did not become ready; last log lines:" >&2
            tail -n 30 "$DIR/$what.log" >&2 || true
            return 1
        fi
        check_alive "$what"
        sleep 0.2
    done
}

check_alive() {
    local pid name
    while read -r pid name; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "control-plane: $name exited during start (wanted: $1); last log lines:" >&2
            tail -n 30 "$DIR/$name.log" >&2 || true
            exit 1
        fi
    done <"$DIR/pids"
}

start() {
    [[ -n ${DIR:-} ]] || die "usage: $0 start DIR"
    local bin
    bin="$(build)"
    mkdir -p "$DIR/pki" "$DIR/etcd"
    DIR="$(cd "$DIR" && pwd)"
    [[ -e $DIR/pids ]] && die "$DIR/pids exists: stop $DIR first"
    if [[ -f $NODE_MARK/dir && $(cat "$NODE_MARK/dir") != "$DIR" ]]; then
        echo "control-plane: stopping what an earlier run left in $(cat "$NODE_MARK/dir")" >&2
        (DIR=$(cat "$NODE_MARK/dir") && stop)
    fi
    : >"$DIR/pids"
    trap 'stop' ERR
    bash "$HERE/images.sh" base "$DIR/images"
    local etcd_port peer_port api_port sink_port
    etcd_port=$(free_port)
    sink_port=$(free_port)
    peer_port=$(free_port)
    api_port=$(free_port)
    APISERVER_URL=https://127.0.0.1:$api_port

    sign ca "/CN=e2e-cluster-ca" self
    sign apiserver "/CN=kube-apiserver" ca \
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=e2e-admin" ca "extendedKeyUsage=clientAuth"
    sign controller-manager "/CN=system:kube-controller-manager" ca "extendedKeyUsage=clientAuth"
    sign scheduler "/CN=system:kube-scheduler" ca "extendedKeyUsage=clientAuth"
    sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" ca "extendedKeyUsage=clientAuth"
    # The apiserver's identity towards webhooks, from a CA of its own (the server's --client-ca).
    sign webhook-client-ca "/CN=e2e-webhook-client-ca" self
    sign webhook-client "/CN=kube-apiserver-webhook-client" webhook-client-ca "extendedKeyUsage=clientAuth"
    openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/pki/sa.key" 2>/dev/null
    openssl ec -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null

    cat >"$DIR/webhook-kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
  - name: "*"
    user:
      client-certificate: $DIR/pki/webhook-client.crt
      client-key: $DIR/pki/webhook-client.key
EOF
    cat >"$DIR/admission.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: MutatingAdmissionWebhook
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: WebhookAdmissionConfiguration
      kubeConfigFile: $DIR/webhook-kubeconfig
  - name: ValidatingAdmissionWebhook
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: WebhookAdmissionConfiguration
      kubeConfigFile: $DIR/webhook-kubeconfig
EOF
    cat >"$DIR/egress.yaml" <<EOF
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
  - name: cluster
    connection:
      proxyProtocol: HTTPConnect
      transport:
        uds:
          udsName: $DIR/egress.sock
EOF
    : >"$DIR/egress-routes"
    # Every request sampled: the suite reads the apiserver's own timing of each webhook call.
    cat >"$DIR/tracing.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: TracingConfiguration
endpoint: 127.0.0.1:$sink_port
samplingRatePerMillion: 1000000
EOF

    run egress "$bin/network" egress "$DIR/egress.sock" "$DIR/egress-routes" "$DIR/node-dialer.sock" \
        "$APISERVER_URL" "$DIR/pki/ca.crt" "$DIR/pki/admin.crt" "$DIR/pki/admin.key"
    # The node's end of the way to the apiserver (control-plane/node.sh) connects here.
    run apiserver-forward "$bin/network" forward "tcp:127.0.0.1:$api_port" "unix:$DIR/apiserver.sock"
    run span-sink "$bin/span-sink" "127.0.0.1:$sink_port" "$DIR/webhook-spans.jsonl" "Call mutating webhook"
    run etcd "$bin/etcd" --name e2e --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "e2e=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
    wait_for etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"

    run kube-apiserver "$bin/kube-apiserver" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
        --client-ca-file "$DIR/pki/ca.crt" \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --kubelet-preferred-address-types Hostname \
        --kubelet-client-certificate "$DIR/pki/kubelet-client.crt" --kubelet-client-key "$DIR/pki/kubelet-client.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --endpoint-reconciler-type none \
        --admission-control-config-file "$DIR/admission.yaml" \
        --egress-selector-config-file "$DIR/egress.yaml" \
        --tracing-config-file "$DIR/tracing.yaml" \
        --allow-privileged=true
    kubeconfig "$DIR/kubeconfig" admin
    kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
    kubeconfig "$DIR/scheduler.kubeconfig" scheduler
    wait_for kube-apiserver 120 "$bin/kubectl" --kubeconfig "$DIR/kubeconfig" get --raw /readyz

    # Pods are only admitted where the ServiceAccount admission plugin finds the namespace's
    # "default" ServiceAccount: the serviceaccount controller makes it. Each controller acts
    # as its own ServiceAccount with its system:controller:* role, as in kubeadm clusters.
    run kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
        --controllers deployment-controller,replicaset-controller,statefulset-controller,job-controller,cronjob-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,garbage-collector-controller,root-ca-certificate-publisher-controller,daemonset-controller,node-lifecycle-controller,endpoints-controller,endpointslice-controller,disruption-controller \
        --service-account-private-key-file "$DIR/pki/sa.key" --root-ca-file "$DIR/pki/ca.crt" \
        --use-service-account-credentials=true
    wait_for kube-controller-manager 60 "$bin/kubectl" --kubeconfig "$DIR/kubeconfig" -n default get serviceaccount default
    run kube-scheduler "$bin/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false
    node_start "$bin" "$DIR/images"

    cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
APISERVER_URL=$APISERVER_URL
BIN_DIR=$bin
EGRESS_ROUTES=$DIR/egress-routes
WEBHOOK_CLIENT_CA=$DIR/pki/webhook-client-ca.crt
CLUSTER_CA=$DIR/pki/ca.crt
WEBHOOK_SPANS=$DIR/webhook-spans.jsonl
NODE_NETNS=$NODE_NETNS
CONTAINERD_ADDRESS=$NODE_DIR/containerd.sock
REGISTRY=$NODE_REGISTRY
EOF
    trap - ERR
    echo "control-plane: ready at $APISERVER_URL (state in $DIR)" >&2
}

stop() {
    [[ -n ${DIR:-} ]] || die "usage: $0 stop DIR"
    node_stop "$DIR"
    [[ -f $DIR/pids ]] || return 0
    local pid name pids=()
    while read -r pid name; do
        # Each was started with setsid: its process group id is its pid.
        kill -TERM -- "-$pid" 2>/dev/null && pids+=("$pid")
    done < <(tac "$DIR/pids")
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    # And whatever a test started on this control plane's files (webhook servers), even if
    # the test process died first.
    pkill -KILL -f -- "$DIR/" 2>/dev/null || true
    rm -f "$DIR/pids" "$DIR"/*.sock
}

# load: an image the suite built (the webhook's) into the running node.
load() {
    [[ -n ${DIR:-} && -f ${1:-} ]] || die "usage: $0 load DIR TAR"
    # shellcheck source=/dev/null
    source "$DIR/env"
    NODE_DIR=$DIR/node NODE_REGISTRY=$REGISTRY
    local ref
    ref=$(tar -xOf "$1" manifest.json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])' ||
        tar -xOf "$1" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["io.containerd.image.name"])')
    node_load "$1" "$ref"
}

DIR="${2:-}"
case "${1:-}" in
build) build ;;
start) start ;;
load) load "${3:-}" ;;
stop) stop ;;
*) die "usage: $0 build | start DIR | load DIR TAR | stop DIR" ;;
esac
