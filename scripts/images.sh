#!/usr/bin/env bash
# The images the end-to-end suite runs, built offline from Debian files (no registry is
# reachable here), as OCI image-layout tars for `ctr images import`:
#
#   images.sh base OUT      busybox:1.36, bitnami/nginx (an nginx that behaves like Bitnami's:
#                           uid 1001, port 8080, serves /app), the pause image, and the
#                           runtime base the Dockerfile's final stage builds on
#   images.sh webhook OUT   the webhook's image from the project's Dockerfile (buildah), its
#                           final stage on that runtime base, packaging the release binary
#                           built on the host (--build-arg BINARY=prebuilt)
#
# Each tar names its image (index.json's io.containerd.image.name); OUT/refs lists them.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PACK="$HERE/images/oci-image.py"
K8S_VERSION=v1.37.2

die() { echo "images: $*" >&2; exit 1; }

# The reference each image is imported as (docker.io names as kubelet normalizes them).
BUSYBOX_REF=docker.io/library/busybox:1.36
NGINX_REF=docker.io/bitnami/nginx:latest
PAUSE_REF=registry.k8s.io/pause:3.10
RUNTIME_REF=localhost/sidecar-injector-test/runtime-base:1
# The name and tag deploy/base/kustomization.yaml installs: the crate's version.
WEBHOOK_REF=docker.io/library/sidecar-injector:$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)

# copy_with_libs ROOTFS FILE...: each file and the shared libraries it loads, at their paths.
copy_with_libs() {
    local rootfs=$1 f lib
    shift
    for f in "$@"; do
        install -D -m "$(stat -c %a "$f")" "$f" "$rootfs$f"
        for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
            [[ -e $rootfs$lib ]] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
        done
    done
}

passwd() { # passwd ROOTFS "name:uid" ...
    local rootfs=$1 entry
    shift
    mkdir -p "$rootfs/etc"
    for entry in root:0 "$@"; do
        echo "${entry%%:*}:x:${entry##*:}:${entry##*:}:${entry%%:*}:/:/sbin/nologin" >>"$rootfs/etc/passwd"
        echo "${entry%%:*}:x:${entry##*:}:" >>"$rootfs/etc/group"
    done
}

busybox_image() {
    local rootfs=$1/busybox.rootfs applet
    rm -rf "$rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    install -m 0755 /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
    done
    passwd "$rootfs" nobody:65534
    python3 "$PACK" "$rootfs" "$1/busybox.tar" --ref "$BUSYBOX_REF" --cmd '["sh"]'
}

nginx_image() {
    local rootfs=$1/nginx.rootfs
    rm -rf "$rootfs"
    copy_with_libs "$rootfs" /usr/sbin/nginx
    install -D -m 0644 /etc/nginx/mime.types "$rootfs/etc/nginx/mime.types"
    # Bitnami's layout, reduced: non-root, port 8080, the document root /app, logs to the
    # container's output; the master process reloads on SIGHUP and logs that it did.
    cat >"$rootfs/etc/nginx/nginx.conf" <<'EOF'
worker_processes 2;
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    include mime.types;
    access_log /dev/stdout;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server {
        listen 8080;
        root /app;
        index index.html;
    }
}
EOF
    mkdir -p "$rootfs/app" "$rootfs/tmp" "$rootfs/var/lib/nginx" "$rootfs/var/log/nginx"
    chmod 1777 "$rootfs/tmp"
    echo "<p>hello from nginx</p>" >"$rootfs/app/index.html"
    passwd "$rootfs" nginx:1001
    printf '%s 1001 1001\n' app var/lib/nginx var/log/nginx >"$rootfs/.owners"
    python3 "$PACK" "$rootfs" "$1/nginx.tar" --ref "$NGINX_REF" --user 1001 --workdir /app \
        --entrypoint '["/usr/sbin/nginx", "-e", "stderr", "-g", "daemon off;"]'
}

pause_image() {
    local rootfs=$1/pause.rootfs zip
    zip="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.zip"
    [[ -f $zip ]] || die "$zip is missing: run scripts/control-plane.sh build first"
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$zip" "k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c" >"$1/pause.c"
    gcc -Os -static -o "$rootfs/pause" "$1/pause.c"
    strip "$rootfs/pause"
    python3 "$PACK" "$rootfs" "$1/pause.tar" --ref "$PAUSE_REF" --entrypoint '["/pause"]' --user 65535
}

# What distroless/cc gives the binary: glibc and libgcc from Debian, CA roots, the nonroot
# user 65532, no shell.
runtime_image() {
    local rootfs=$1/runtime.rootfs lib
    rm -rf "$rootfs"
    for lib in /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libm.so.6 \
        /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libdl.so.2 /lib/x86_64-linux-gnu/libpthread.so.0 \
        /lib/x86_64-linux-gnu/librt.so.1; do
        install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$rootfs/tmp" "$rootfs/home/nonroot"
    chmod 1777 "$rootfs/tmp"
    passwd "$rootfs" nonroot:65532
    echo "home/nonroot 65532 65532" >"$rootfs/.owners"
    python3 "$PACK" "$rootfs" "$1/runtime.tar" --ref "$RUNTIME_REF" --user 65532 --workdir /home/nonroot
}

base() {
    local out=$1
    mkdir -p "$out"
    busybox_image "$out"
    nginx_image "$out"
    pause_image "$out"
    runtime_image "$out"
    rm -rf "$out"/*.rootfs
    printf '%s\n' "$BUSYBOX_REF busybox.tar" "$NGINX_REF nginx.tar" "$PAUSE_REF pause.tar" \
        "$RUNTIME_REF runtime.tar" >"$out/refs"
}

# buildah keeps its storage under OUT, never in /var/lib/containers.
webhook() {
    local out=$1 store
    [[ -x $ROOT/target/release/sidecar-injector ]] || die "build the release binary first"
    [[ -f $out/runtime.tar ]] || base "$out"
    store="$out/buildah"
    # buildah makes /run/containers/networks whatever its flags: leave the host as it was.
    local made_run=
    [[ -d /run/containers ]] || made_run=1
    local b=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
    "${b[@]}" tag "$("${b[@]}" pull -q "oci-archive:$out/runtime.tar")" "$RUNTIME_REF"
    "${b[@]}" bud -q --layers=false --pull=never --isolation chroot \
        --build-arg BINARY=prebuilt --build-arg RUNTIME_IMAGE="$RUNTIME_REF" \
        -f "$ROOT/Dockerfile" -t "$WEBHOOK_REF" "$ROOT" >/dev/null
    rm -f "$out/webhook.tar"
    "${b[@]}" push -q "$WEBHOOK_REF" "docker-archive:$out/webhook.tar:$WEBHOOK_REF" >/dev/null
    "${b[@]}" rmi -a -f >/dev/null 2>&1 || true
    [[ -z $made_run ]] || rm -rf /run/containers
    grep -q " webhook.tar$" "$out/refs" 2>/dev/null || echo "$WEBHOOK_REF webhook.tar" >>"$out/refs"
}

case "${1:-}" in
base) [[ -n ${2:-} ]] || die "usage: $0 base OUT"; base "$2" ;;
webhook) [[ -n ${2:-} ]] || die "usage: $0 webhook OUT"; webhook "$2" ;;
*) die "usage: $0 base OUT | webhook OUT" ;;
esac
