#!/usr/bin/env python3
"""Writes a single-layer docker-archive image tarball (the `docker save` format that
`ctr images import` and `buildah pull docker-archive:` read), without a container engine:
no image can be pulled on the test machines, so the few images the node harness needs (the pod
sandbox "pause" image, test servers) are static binaries packed here.

  image-archive.py OUT.tar REPO:TAG ENTRYPOINT SRC=DEST [SRC=DEST ...]

ENTRYPOINT is a path inside the image (e.g. /pause). Every SRC file lands at DEST, mode 0755,
owned by root. The output is deterministic (fixed mtimes), so equal inputs give equal digests.
"""
import hashlib
import io
import json
import os
import sys
import tarfile


def add_file(tar, name, data, mode):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    tar.addfile(info)


def main(argv):
    if len(argv) < 5:
        sys.stderr.write(__doc__)
        return 2
    out, tag, entrypoint, files = argv[1], argv[2], argv[3], argv[4:]

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        dirs = set()
        for spec in files:
            src, _, dest = spec.partition("=")
            if not dest.startswith("/"):
                raise SystemExit(f"DEST must be absolute: {spec}")
            parts = dest.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    add_dir(layer, d)
            with open(src, "rb") as f:
                add_file(layer, dest.lstrip("/"), f.read(), 0o755)
    layer_bytes = layer_buf.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": [entrypoint], "User": "0:0", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/lib/image-archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": config_id + ".json", "RepoTags": [tag], "Layers": [diff_id + "/layer.tar"]}]

    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as archive:
        add_dir(archive, diff_id)
        add_file(archive, diff_id + "/layer.tar", layer_bytes, 0o644)
        add_file(archive, config_id + ".json", config_bytes, 0o644)
        add_file(archive, "manifest.json", json.dumps(manifest).encode(), 0o644)
        repo, _, t = tag.rpartition(":")
        add_file(archive, "repositories", json.dumps({repo: {t: diff_id}}).encode(), 0o644)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
