"""Write a single-layer image as a ``docker save``-style tarball (``ctr images import`` reads it).

Used for the sandbox (pause) image of the local test cluster: a static binary in an otherwise
empty filesystem needs no build tool. Usage: mkimage.py OUT.tar REF ROOTFS_DIR [ENTRYPOINT...]
"""

import hashlib
import io
import json
import os
import sys
import tarfile


def layer_of(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                full = os.path.join(directory, name)
                info = tar.gettarinfo(full, os.path.relpath(full, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    out, ref, rootfs, *entry = sys.argv[1:]
    layer = layer_of(rootfs)
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entry or None, "Env": ["PATH=/"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_dir = diff[len("sha256:") :]
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_dir}/layer.tar"]}]
    with tarfile.open(out, "w") as tar:
        add(tar, f"{layer_dir}/layer.tar", layer)
        add(tar, config_name, config)
        add(tar, "manifest.json", json.dumps(manifest).encode())


if __name__ == "__main__":
    main()
