#!/usr/bin/env python3
"""Packs a directory into a one-layer OCI image-layout tar that `ctr images import` and
`buildah pull oci-archive:` read: no registry, no daemon.

usage: oci-image.py ROOTFS OUT.tar --ref NAME [--entrypoint JSON] [--cmd JSON] [--user U]
                    [--env K=V ...] [--workdir DIR]

Files keep their mode; owners are root unless ROOTFS/.owners lists "PATH UID GID" lines.
Timestamps are fixed, so the same files give the same digests.
"""
import argparse
import hashlib
import io
import json
import os
import tarfile

EPOCH = 0


def layer_tar(rootfs):
    owners = {}
    owners_file = os.path.join(rootfs, ".owners")
    if os.path.exists(owners_file):
        for line in open(owners_file):
            if line.strip():
                path, uid, gid = line.split()
                owners[path.strip("/")] = (int(uid), int(gid))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                full = os.path.join(top, name)
                rel = os.path.relpath(full, rootfs)
                if rel == ".owners":
                    continue
                info = tar.gettarinfo(full, arcname=rel)
                info.uid, info.gid = owners.get(rel, (0, 0))
                info.uname = info.gname = ""
                info.mtime = EPOCH
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime = len(data), EPOCH
    out.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("rootfs")
    p.add_argument("out")
    p.add_argument("--ref", required=True)
    p.add_argument("--entrypoint", type=json.loads)
    p.add_argument("--cmd", type=json.loads)
    p.add_argument("--user")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir")
    a = p.parse_args()

    layer = layer_tar(a.rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env}
    for key, value in (("Entrypoint", a.entrypoint), ("Cmd", a.cmd), ("User", a.user),
                       ("WorkingDir", a.workdir)):
        if value is not None:
            config[key] = value
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "created": "1970-01-01T00:00:00Z",
    }, sort_keys=True).encode()

    with tarfile.open(a.out, "w") as out:
        layer_digest, layer_size = blob(out, layer)
        config_digest, config_size = blob(out, image_config)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        }, sort_keys=True).encode()
        manifest_digest, manifest_size = blob(out, manifest)
        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps({
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest, "size": manifest_size,
                    "annotations": {"io.containerd.image.name": a.ref,
                                    "org.opencontainers.image.ref.name": a.ref.rsplit(":", 1)[-1]},
                }],
            }).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH
            out.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
