#!/usr/bin/env bash
# build-images.sh - build the project's container images without an image registry.
#
# Why: the integration cluster (scripts/kube.sh) runs real pods but can reach no registry, so
# images are built here from Debian packages and PyPI only, and handed over as docker-archive
# tarballs that `ctr -n k8s.io images import` loads.
#
#   1. tools   buildah + runc (+ debootstrap, only when the base image must be made) from apt.
#   2. base    localhost/consortium-base:bookworm: Debian bookworm minbase + python3, made once
#              with debootstrap and cached as a rootfs tarball, so later runs (a fresh clone, CI)
#              only import it (~seconds) instead of bootstrapping (~minutes).
#   3. images  one function per image: build_node_image, build_operator_image, and
#              build_node_variant (derived from the node image, see --node-variant).
#
# usage: scripts/build-images.sh [--load] [--kind [CLUSTER]] [--node-variant NAME]...
#                                [node|operator]...
#   (no image named: both, or only the variants when --node-variant is given)
#   --load          also import the built archives into the local cluster's containerd
#                   (scripts/kube.sh import), so one command builds and loads both images
#   --kind CLUSTER  also load them into a kind cluster (`kind load image-archive --name
#                   CLUSTER`; default CLUSTER: consortium, as in kind-config.yaml). Needs `kind`
#                   and Docker; the images are the same archives the local cluster imports.
#   --node-variant NAME
#                   also build localhost/consortium-node:<version>-NAME (NAME: [a-z0-9-]{1,20};
#                   repeatable): the node image (built first if needed) plus one module,
#                   consortium_node/_variant.py, so its code measurement differs from the node
#                   image's; for code-upgrade tests. --load and --kind load it too (the node
#                   image itself only when `node` is named as well).
#
# Outputs (OUT_DIR, default build/images):
#   consortium-node.tar          docker-archive of localhost/consortium-node:<version>
#   consortium-node.measurement  the node's code measurement (put it in attestation.measurements)
#   consortium-node.stamp        input hash; when it matches and the tarball exists, the build is
#                                skipped (inputs: the Dockerfile, pyproject.toml, every *.py and
#                                py.typed under node_image/consortium_node, and the base image id)
#   consortium-node-NAME.tar          docker-archive of localhost/consortium-node:<version>-NAME
#   consortium-node-NAME.measurement  the variant's code measurement
#   consortium-node-NAME.stamp        input hash: the node image's stamp, NAME and the variant
#                                     recipe (VARIANT_REV, the module's text)
#   consortium-operator.tar      docker-archive of localhost/consortium-operator:<version>
#   consortium-operator.stamp    input hash, as above (inputs: operator/Dockerfile, pyproject.toml,
#                                every *.py and py.typed under node_image/consortium_node and
#                                operator/consortium_operator, and the base image id)
#
# Environment:
#   OUT_DIR          output directory (default build/images)
#   XDG_CACHE_HOME   the base tarball and containers.conf live in $XDG_CACHE_HOME/consortium-operator
#   DEBIAN_MIRROR    debootstrap mirror (default http://deb.debian.org/debian)
#   BUILD_CA_BUNDLE  host CA bundle bind-mounted over the build stage's trust store so pip trusts
#                    the same TLS proxies the host does (default /etc/ssl/certs/ca-certificates.crt;
#                    empty: use the base image's own store). Build-time only, never in an image.
#   STORAGE_DRIVER   buildah's storage driver (buildah's default: overlay when supported, else vfs)
#
# Needs root: debootstrap does, and rootful buildah avoids the subuid set-up rootless needs.
#
# Fixes carried:
#  - buildah needs `runtime = "runc"` and default_ulimits in containers.conf on this machine (no
#    CAP_SYS_RESOURCE: the default ulimits cannot be raised). We do not edit /etc/containers:
#    CONTAINERS_CONF points at a file under the cache dir (it replaces, not extends, the system
#    containers.conf for the buildah processes this script starts).
#  - --isolation=chroot: no OCI runtime namespaces are needed for RUN steps or the checks.
#  - --pull=never: the base is local; a short outage or a typo must not send buildah to a registry.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD

OUT_DIR=${OUT_DIR:-build/images}
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/consortium-operator
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BUILD_CA_BUNDLE=${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}

# Bump BASE_REV when the base recipe below changes: it names the cached tarball and is part of
# every image's input hash, so both are rebuilt.
BASE_REV=v1
BASE_IMAGE=localhost/consortium-base:bookworm
BASE_TAR=$CACHE_DIR/base-bookworm-$BASE_REV.tar
BASE_PACKAGES=python3,python3-venv,ca-certificates

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { printf '[build-images] ERROR: %s\n' "$*" >&2; exit 1; }

# Timings: every step goes through `step NAME CMD...`, and a summary is printed at the end.
TIMINGS=()
step() {
  local name=$1; shift
  local t0 t1 dt
  t0=$(date +%s.%N)
  log "$name ..."
  "$@"
  t1=$(date +%s.%N)
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  log "$name: ${dt}s"
  TIMINGS+=("$(printf '%-32s %7ss' "$name" "$dt")")
}
print_timings() {
  log "timings:"
  local line
  for line in "${TIMINGS[@]}"; do log "  $line"; done
}

# --- 1. tools ---------------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {  # apt_install PACKAGE... (only those whose command is missing are passed in)
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_tools() {
  [ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and rootful buildah need it)"
  local missing=()
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    apt_install "${missing[@]}"
  fi
  mkdir -p "$CACHE_DIR"
  # Written every run (cheap) so a changed recipe takes effect; see "Fixes carried" above.
  cat >"$CACHE_DIR/containers.conf" <<'EOF'
# Written by scripts/build-images.sh; used through CONTAINERS_CONF by the buildah it runs.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF=$CACHE_DIR/containers.conf
  # Debian's buildah package ships the default policy.json; a hand-installed one may not.
  if [ ! -f /etc/containers/policy.json ]; then
    mkdir -p /etc/containers
    printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' >/etc/containers/policy.json
  fi
}

# --- 2. base image ----------------------------------------------------------------------------

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

BOOTSTRAP_DIR=""
cleanup_bootstrap() {
  if [ -n "$BOOTSTRAP_DIR" ] && [ -d "$BOOTSTRAP_DIR" ]; then
    umount -l "$BOOTSTRAP_DIR/proc" 2>/dev/null || true
    umount -l "$BOOTSTRAP_DIR/sys" 2>/dev/null || true
    rm -rf --one-file-system "$BOOTSTRAP_DIR"
  fi
}

# debootstrap a minimal bookworm with python3, apply bookworm-updates and security updates, strip
# what a runtime image does not need, and save it as a rootfs tarball ($BASE_TAR).
bootstrap_base_tar() {
  command -v debootstrap >/dev/null 2>&1 || { log "installing debootstrap (apt)"; apt_install debootstrap; }
  BOOTSTRAP_DIR=$CACHE_DIR/base-rootfs.tmp
  trap cleanup_bootstrap EXIT
  cleanup_bootstrap
  mkdir -p "$BOOTSTRAP_DIR"
  local root=$BOOTSTRAP_DIR
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$DEBIAN_MIRROR" \
    >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; }

  # Security updates: debootstrap only reads the release suite. deb.debian.org also serves
  # debian-security; derive its URL from the mirror's.
  cat >"$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
  mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get update -qq && apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade && apt-get clean' \
    >>"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; die "security upgrade in the base failed"; }
  umount "$root/proc"

  # Strip: package caches and lists, docs (copyright notices are kept: they are the licences),
  # man/info pages, message translations (33 MB; locale.alias stays), logs, and host-specific
  # files the container runtime provides itself.
  # ${root:?} and --one-file-system: never the host's /dev, whatever goes wrong.
  rm -rf --one-file-system \
    "${root:?}"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/* \
    "$root"/var/log/* "${root:?}"/dev/* "$root"/run/* "$root"/tmp/* "$root"/var/tmp/* \
    "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/etc/machine-id
  find "$root/usr/share/doc" -mindepth 1 \( -type f -o -type l \) ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  : >"$root/etc/machine-id"
  chmod 1777 "$root/tmp" "$root/var/tmp"

  # Deterministic tar: sorted names, numeric owners, fixed mtimes (file contents still vary with
  # package versions, which is the point of BASE_REV).
  tar --sort=name --numeric-owner --mtime='2024-01-01 00:00:00Z' --xattrs \
    -C "$root" -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  cleanup_bootstrap
  BOOTSTRAP_DIR=""
  trap - EXIT
}

# Import $BASE_TAR as $BASE_IMAGE: a scratch container, the rootfs untarred into its mount, and
# a commit with the config a python base needs.
import_base() {
  local ctr mnt
  ctr=$(buildah from --pull=never scratch)
  mnt=$(buildah mount "$ctr")
  tar --numeric-owner --xattrs -xpf "$BASE_TAR" -C "$mnt"
  buildah umount "$ctr" >/dev/null
  buildah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd '["python3"]' \
    --label org.opencontainers.image.title=consortium-base \
    --label org.opencontainers.image.description="Debian bookworm minbase with python3 (debootstrap)" \
    --label consortium.tee.dev/base-revision="$BASE_REV" \
    "$ctr"
  buildah commit --quiet --rm --timestamp 0 "$ctr" "$BASE_IMAGE" >/dev/null
}

ensure_base() {
  if image_exists "$BASE_IMAGE"; then
    log "base $BASE_IMAGE: present in buildah storage"
    return
  fi
  if [ -f "$BASE_TAR" ]; then
    log "base $BASE_IMAGE: loading the cached $BASE_TAR"
  else
    step "base: debootstrap bookworm" bootstrap_base_tar
  fi
  step "base: import" import_base
}

# --- 3. images --------------------------------------------------------------------------------

VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
SOURCE_URL=$(git -C "$REPO" remote get-url origin 2>/dev/null || true)

# sha256 over the listed files' paths and contents, plus extra strings (the base identity).
input_hash() {  # input_hash "EXTRA" FILE...
  local extra=$1; shift
  {
    printf 'extra %s\n' "$extra"
    local f
    for f in "$@"; do printf '%s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; done
  } | sha256sum | cut -d' ' -f1
}

# The node's measurement from the source tree, with the project's own measure_tree.
source_measurement() {  # source_measurement PACKAGE_DIR
  local code='import sys; from consortium_node.attestation.measurement import measure_tree; print(measure_tree(sys.argv[1]))'
  if [ -x .venv/bin/python ]; then
    .venv/bin/python -c "$code" "$1"
  else
    PYTHONPATH=node_image python3 -c "$code" "$1"
  fi
}

buildah_build() {  # buildah_build IMAGE DOCKERFILE BUILD-ARGS...
  local image=$1 dockerfile=$2; shift 2
  local extra=()
  if [ -n "$BUILD_CA_BUNDLE" ] && [ -f "$BUILD_CA_BUNDLE" ]; then
    extra+=(--volume "$BUILD_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  [ -z "$SOURCE_URL" ] || extra+=(--build-arg "SOURCE=$SOURCE_URL")
  buildah build --quiet --isolation=chroot --pull=never --layers=false \
    --build-arg BASE="$BASE_IMAGE" --build-arg VERSION="$VERSION" \
    "${extra[@]}" "$@" -t "$image" -f "$dockerfile" . >/dev/null
}

image_id() { buildah images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null || true; }

# A rebuild leaves the previous image untagged: remove it (if nothing else uses it) so storage
# does not grow by one image per source change.
drop_untagged() {  # drop_untagged PREVIOUS-ID IMAGE
  if [ -n "$1" ] && [ "$1" != "$(image_id "$2")" ]; then
    buildah rmi "$1" >/dev/null 2>&1 || true
  fi
}

# Run a command in a throwaway container of IMAGE as the image's user; prints its stdout.
run_in_image() {  # run_in_image IMAGE CMD...
  local image=$1; shift
  local ctr rc=0
  ctr=$(buildah from --pull=never "$image")
  buildah run --isolation=chroot "$ctr" -- "$@" || rc=$?
  buildah rm "$ctr" >/dev/null
  return "$rc"
}

export_archive() {  # export_archive IMAGE TARBALL
  rm -f "$2.tmp"
  buildah push --quiet "$1" "docker-archive:$2.tmp:$1" >/dev/null
  mv "$2.tmp" "$2"
}

check_node_image() {  # check_node_image IMAGE MEASUREMENT
  local image=$1 want=$2 got label uid
  uid=$(run_in_image "$image" id -u)
  [ "$uid" = 10001 ] || die "$image runs as uid $uid, expected 10001"
  run_in_image "$image" consortium-node --help >/dev/null
  run_in_image "$image" python -c '
import importlib.util, sys
import aiohttp, boto3, cbor2, croniter, cryptography, prometheus_client, yaml, consortium_node
from Crypto.Protocol.SecretSharing import Shamir
extra = [m for m in ("consortium_operator", "kopf", "kubernetes", "pip") if importlib.util.find_spec(m)]
sys.exit(f"not part of the node image: {extra}" if extra else 0)'
  got=$(run_in_image "$image" consortium-node measure)
  label=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "consortium.tee.dev/measurement"}}' "$image")
  if [ "$got" != "$want" ] || [ "$label" != "$want" ]; then
    die "measurement mismatch: source $want, image says $got, label $label (did node_image/consortium_node change during the build? then run again)"
  fi
}

NODE_BUILT=0  # build_node_image ran in this invocation (a variant does not run it again)
build_node_image() {
  local image=localhost/consortium-node:$VERSION
  local tar=$OUT_DIR/consortium-node.tar stamp=$OUT_DIR/consortium-node.stamp
  local measurement_file=$OUT_DIR/consortium-node.measurement
  local files m hash
  mapfile -t files < <(find node_image/consortium_node -type f \( -name '*.py' -o -name py.typed \) \
    -not -path '*/__pycache__/*' | LC_ALL=C sort)
  hash=$(input_hash "$BASE_IMAGE $BASE_REV $VERSION" node_image/Dockerfile pyproject.toml "${files[@]}")
  m=$(source_measurement node_image/consortium_node)
  [[ "$m" =~ ^[0-9a-f]{64}$ ]] || die "bad source measurement: $m"

  if [ -f "$tar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] \
     && [ "$(cat "$measurement_file" 2>/dev/null)" = "$m" ]; then
    log "node: $tar is up to date (input hash ${hash:0:16}), skipping the build"
  else
    ensure_base
    rm -f "$stamp"
    local previous
    previous=$(image_id "$image")
    step "node: buildah build" buildah_build "$image" node_image/Dockerfile \
      --label "consortium.tee.dev/measurement=$m"
    drop_untagged "$previous" "$image"
    step "node: check image" check_node_image "$image" "$m"
    step "node: export docker-archive" export_archive "$image" "$tar"
    printf '%s\n' "$m" >"$measurement_file"
    printf '%s\n' "$hash" >"$stamp"
    log "node: $image: $(buildah images --format '{{.Size}}' "$image") in storage; $tar: $(du -h "$tar" | cut -f1)"
  fi
  NODE_BUILT=1
  echo "node image measurement: $m"
}

# --- node variants: the node image plus one module, for a second code measurement -------------

# Bump VARIANT_REV when the variant recipe below changes (it is part of every variant's stamp).
VARIANT_REV=v1
VARIANT_NAME_RE='^[a-z0-9-]{1,20}$'

variant_module() {  # variant_module NAME: the text of consortium_node/_variant.py
  printf '"""Build variant %s (a distinct code measurement, for upgrade tests)."""\n\nVARIANT = "%s"\n' \
    "$1" "$1"
}

image_label() {  # image_label IMAGE KEY (empty when the image or the label is missing)
  buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# The variant's measurement from the source tree: a copy of node_image/consortium_node with the
# module added (what the derived image holds, since check_node_image proved the node image
# measures as its source does).
variant_source_measurement() {  # variant_source_measurement MODULE-FILE
  local tmp m rc=0
  tmp=$(mktemp -d)
  { cp -r node_image/consortium_node "$tmp/consortium_node" \
    && cp "$1" "$tmp/consortium_node/_variant.py" \
    && m=$(source_measurement "$tmp/consortium_node"); } || rc=$?
  rm -rf "$tmp"
  [ "$rc" = 0 ] || return "$rc"
  printf '%s\n' "$m"
}

# The node image in buildah storage must be the one in consortium-node.tar (same measurement):
# when it is missing or another build replaced it, load it from the archive (a local transport,
# no registry).
ensure_node_in_storage() {  # ensure_node_in_storage IMAGE TARBALL MEASUREMENT
  local image=$1 tar=$2 want=$3
  if [ "$(image_label "$image" consortium.tee.dev/measurement)" != "$want" ]; then
    log "node: $image is not in buildah storage with measurement ${want:0:16}; loading $tar"
    buildah pull --quiet "docker-archive:$tar" >/dev/null
    [ "$(image_label "$image" consortium.tee.dev/measurement)" = "$want" ] \
      || die "$tar does not hold $image with measurement $want"
  fi
}

# A working container of the node image; the module is added as root (the image's user, 10001,
# cannot write site-packages), compiled like the Dockerfile does (checked-hash .pyc: a
# read-only root filesystem never needs a bytecode write), and committed. The image config,
# USER 10001:10001 included, is kept: `buildah run --user` does not change it.
build_variant_image() {  # build_variant_image BASE-IMAGE IMAGE NAME MODULE-FILE MEASUREMENT
  local base=$1 image=$2 name=$3 module=$4 m=$5 ctr site rc=0
  ctr=$(buildah from --pull=never "$base")
  {
    site=$(buildah run --isolation=chroot --user 0:0 "$ctr" -- \
      python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && [ -n "$site" ] \
    && buildah run --isolation=chroot --user 0:0 "$ctr" -- test -f "$site/consortium_node/__init__.py" \
    && buildah copy --quiet --chown 0:0 --chmod 0644 "$ctr" "$module" \
      "$site/consortium_node/_variant.py" >/dev/null \
    && buildah run --isolation=chroot --user 0:0 "$ctr" -- \
      python -m compileall -q --invalidation-mode checked-hash "$site/consortium_node/_variant.py" \
    && buildah config \
      --label "consortium.tee.dev/measurement=$m" \
      --label "consortium.tee.dev/variant=$name" \
      --label "org.opencontainers.image.description=consortium-node build variant $name (a distinct code measurement, for upgrade tests)" \
      "$ctr" \
    && buildah commit --quiet --rm "$ctr" "$image" >/dev/null
  } || rc=$?
  if [ "$rc" != 0 ]; then
    buildah rm "$ctr" >/dev/null 2>&1 || true
    die "building $image from $base failed"
  fi
}

check_node_variant_image() {  # check_node_variant_image IMAGE NAME MEASUREMENT
  check_node_image "$1" "$3"
  # The module is importable, says its name, and its bytecode is present (checked-hash).
  run_in_image "$1" python -c '
import importlib.util, os, sys
import consortium_node._variant as v
pyc = importlib.util.cache_from_source(v.__file__)
if v.VARIANT != sys.argv[1]:
    sys.exit(f"_variant.VARIANT is {v.VARIANT!r}, expected {sys.argv[1]!r}")
if not os.path.isfile(pyc) or (open(pyc, "rb").read(8)[4] & 0b11) != 0b11:
    sys.exit(f"no checked-hash bytecode at {pyc}")' "$2"
}

build_node_variant() {  # build_node_variant NAME
  local name=$1
  local base=localhost/consortium-node:$VERSION image=localhost/consortium-node:$VERSION-$1
  local base_tar=$OUT_DIR/consortium-node.tar base_stamp=$OUT_DIR/consortium-node.stamp
  local tar=$OUT_DIR/consortium-node-$name.tar stamp=$OUT_DIR/consortium-node-$name.stamp
  local measurement_file=$OUT_DIR/consortium-node-$name.measurement
  local module=$CACHE_DIR/variant-$name.py base_m m hash
  [ "$NODE_BUILT" = 1 ] || build_node_image >/dev/null
  base_m=$(cat "$OUT_DIR/consortium-node.measurement")
  variant_module "$name" >"$module"
  m=$(variant_source_measurement "$module") || die "could not measure the variant's source"
  [[ "$m" =~ ^[0-9a-f]{64}$ ]] || die "bad variant measurement: $m"
  [ "$m" != "$base_m" ] || die "variant $name measures as the node image ($m)"
  hash=$(printf 'variant %s %s %s\n%s' "$name" "$VARIANT_REV" "$(cat "$base_stamp")" "$(cat "$module")" \
    | sha256sum | cut -d' ' -f1)

  if [ -f "$tar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] \
     && [ "$(cat "$measurement_file" 2>/dev/null)" = "$m" ]; then
    log "node-$name: $tar is up to date (input hash ${hash:0:16}), skipping the build"
  else
    rm -f "$stamp"
    ensure_node_in_storage "$base" "$base_tar" "$base_m"
    local previous
    previous=$(image_id "$image")
    step "node-$name: derive" build_variant_image "$base" "$image" "$name" "$module" "$m"
    drop_untagged "$previous" "$image"
    step "node-$name: check" check_node_variant_image "$image" "$name" "$m"
    step "node-$name: export" export_archive "$image" "$tar"
    printf '%s\n' "$m" >"$measurement_file"
    printf '%s\n' "$hash" >"$stamp"
    log "node-$name: $image: $(buildah images --format '{{.Size}}' "$image") in storage; $tar: $(du -h "$tar" | cut -f1)"
  fi
  echo "node variant $name image: $image measurement: $m (node image: $base_m)"
}

check_operator_image() {  # check_operator_image IMAGE
  local image=$1 uid
  uid=$(run_in_image "$image" id -u)
  [ "$uid" = 10001 ] || die "$image runs as uid $uid, expected 10001"
  run_in_image "$image" consortium-operator --help >/dev/null
  run_in_image "$image" python -c '
import importlib.util, sys
import aiohttp, cbor2, cryptography, kopf, kubernetes, prometheus_client, yaml
import consortium_node, consortium_operator, consortium_operator.handlers, consortium_operator.main
extra = [m for m in ("pip", "setuptools", "kubernetes.aio") if importlib.util.find_spec(m)]
sys.exit(f"not part of the operator image: {extra}" if extra else 0)'
}

build_operator_image() {
  local image=localhost/consortium-operator:$VERSION
  local tar=$OUT_DIR/consortium-operator.tar stamp=$OUT_DIR/consortium-operator.stamp
  local files hash
  mapfile -t files < <(find node_image/consortium_node operator/consortium_operator -type f \
    \( -name '*.py' -o -name py.typed \) -not -path '*/__pycache__/*' | LC_ALL=C sort)
  hash=$(input_hash "$BASE_IMAGE $BASE_REV $VERSION" operator/Dockerfile pyproject.toml "${files[@]}")

  if [ -f "$tar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    log "operator: $tar is up to date (input hash ${hash:0:16}), skipping the build"
  else
    ensure_base
    rm -f "$stamp"
    local previous
    previous=$(image_id "$image")
    step "operator: buildah build" buildah_build "$image" operator/Dockerfile
    drop_untagged "$previous" "$image"
    step "operator: check image" check_operator_image "$image"
    step "operator: export docker-archive" export_archive "$image" "$tar"
    printf '%s\n' "$hash" >"$stamp"
    log "operator: $image: $(buildah images --format '{{.Size}}' "$image") in storage; $tar: $(du -h "$tar" | cut -f1)"
  fi
}

load_into_kind() {  # load_into_kind CLUSTER TARBALL
  command -v kind >/dev/null 2>&1 || die "--kind: the kind command is not installed (https://kind.sigs.k8s.io)"
  kind get clusters 2>/dev/null | grep -qx "$1" \
    || die "--kind: no kind cluster named '$1' (kind create cluster --config kind-config.yaml)"
  kind load image-archive --name "$1" "$2"
}

main() {
  local load=0 kind_cluster="" variants=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --load) load=1; shift ;;
      --node-variant)
        if [ $# -lt 2 ] || [[ "$2" == -* ]]; then die "--node-variant needs a NAME ([a-z0-9-]{1,20})"; fi
        [[ "$2" =~ $VARIANT_NAME_RE ]] \
          || die "--node-variant: bad NAME '$2' (want 1 to 20 of a-z, 0-9 and -)"
        variants+=("$2"); shift 2 ;;
      --node-variant=*) die "use --node-variant NAME (a space, not '=')" ;;
      --kind)
        shift
        if [ $# -gt 0 ] && [[ "$1" != -* ]] && [ "$1" != node ] && [ "$1" != operator ]; then
          kind_cluster=$1; shift
        else
          kind_cluster=consortium
        fi ;;
      -*) die "unknown option '$1' (known: --load, --kind [CLUSTER], --node-variant NAME)" ;;
      *) break ;;
    esac
  done
  local images=("$@")
  [ "${#images[@]}" -gt 0 ] || [ "${#variants[@]}" -gt 0 ] || images=(node operator)
  local t0=$SECONDS
  mkdir -p "$OUT_DIR"
  step "tools" ensure_tools
  local name archives=()
  for name in "${images[@]}"; do
    case "$name" in
      node) build_node_image ;;
      operator) build_operator_image ;;
      *) die "unknown image '$name' (known: node, operator)" ;;
    esac
    archives+=("$name")
  done
  for name in "${variants[@]}"; do
    build_node_variant "$name"
    archives+=("node-$name")
  done
  if [ "$load" = 1 ]; then
    for name in "${archives[@]}"; do
      step "$name: load into the local cluster" \
        bash "$(dirname "$0")/kube.sh" import "$OUT_DIR/consortium-$name.tar"
    done
  fi
  if [ -n "$kind_cluster" ]; then
    for name in "${archives[@]}"; do
      step "$name: load into kind cluster $kind_cluster" \
        load_into_kind "$kind_cluster" "$OUT_DIR/consortium-$name.tar"
    done
  fi
  print_timings
  log "total: $((SECONDS - t0))s"
}

main "$@"
