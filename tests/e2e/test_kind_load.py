"""``scripts/build-images.sh --kind``: the command that loads the images into kind.

kind needs Docker, which this machine does not have, so ``kind`` here is a stand-in script
that records its arguments: what is tested is our command's contract with kind (which
archives, which cluster, a clear error when the cluster or kind is missing). The archives are
the ones the session's cluster fixture built and the local cluster runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.kube import ROOT, Cluster

FAKE_KIND = """#!/bin/sh
echo "$*" >> "{log}"
case "$1 $2" in
  "get clusters") echo consortium; echo other ;;
  "load image-archive") [ -s "$5" ] || {{ echo "no archive $5" >&2; exit 1; }} ;;
  *) exit 2 ;;
esac
"""


def build_images(
    tmp_path: Path, *args: str, with_kind: bool = True
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if with_kind:
        kind = bin_dir / "kind"
        kind.write_text(FAKE_KIND.format(log=tmp_path / "kind.log"))
        kind.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    if not with_kind:  # a PATH without any kind at all
        path = ":".join(p for p in path.split(":") if not (Path(p) / "kind").exists())
    return subprocess.run(
        ["bash", str(ROOT / "scripts/build-images.sh"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": path},
        timeout=900,
    )


def test_kind_loads_both_archives_into_the_named_cluster(cluster: Cluster, tmp_path: Path) -> None:
    done = build_images(tmp_path, "--kind")
    assert done.returncode == 0, done.stderr[-3000:]
    calls = (tmp_path / "kind.log").read_text().splitlines()
    loads = [c for c in calls if c.startswith("load ")]
    assert loads == [
        "load image-archive --name consortium build/images/consortium-node.tar",
        "load image-archive --name consortium build/images/consortium-operator.tar",
    ]
    (tmp_path / "kind.log").unlink()
    done = build_images(tmp_path, "--kind", "other", "operator")
    assert done.returncode == 0, done.stderr[-3000:]
    loads = [c for c in (tmp_path / "kind.log").read_text().splitlines() if c.startswith("load ")]
    assert loads == ["load image-archive --name other build/images/consortium-operator.tar"]


def test_kind_errors_name_what_is_missing(cluster: Cluster, tmp_path: Path) -> None:
    missing = build_images(tmp_path, "--kind", "nosuch")
    assert missing.returncode == 1
    assert "no kind cluster named 'nosuch'" in missing.stderr
    assert "kind create cluster --config kind-config.yaml" in missing.stderr
    without = build_images(tmp_path, "--kind", with_kind=False)
    assert without.returncode == 1
    assert "the kind command is not installed" in without.stderr
    unknown = build_images(tmp_path, "--kinda")
    assert unknown.returncode == 1 and "unknown option '--kinda'" in unknown.stderr
