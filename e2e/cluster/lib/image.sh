# Building the platform's images from their Containerfiles with buildah (daemonless), and
# either loading them into the local node (quick iteration, tests) or pushing them to a
# registry (the install path: the chart pulls them by digest). Sourced by each
# component's image/build.
# shellcheck shell=bash

source "$CLUSTER_DIR/lib/rootfs.sh"

# buildah's own store, in the cache (it survives fresh clones, and `down` leaves it).
BUILDAH_ROOT=$FLYNN_CACHE/buildah/storage
bh() {
  command -v buildah >/dev/null || die "buildah is missing: run e2e/cluster/deps (Debian package buildah)"
  buildah --root "$BUILDAH_ROOT" --runroot /run/flynn-buildah "$@"
}

# image_from_layers REF SOURCE...: an image whose root filesystem is the SOURCEs (tarballs
# or directories) laid in order, unless REF is already in buildah's store. Used for the
# local bases: the Containerfiles' BASE is a public image on a real cluster, and here the
# Debian root filesystem the cluster already makes.
image_from_layers() {
  local ref=$1 ctr s; shift
  bh inspect --type image "$ref" >/dev/null 2>&1 && return 0
  log "making the local base $ref"
  ctr=$(bh from --pull=never scratch)
  for s in "$@"; do
    if [ -d "$s" ]; then bh copy "$ctr" "$s/." / >/dev/null; else bh add "$ctr" "$s" / >/dev/null; fi
  done
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  bh commit --quiet --rm "$ctr" "$ref" >/dev/null || die "could not commit the base image $ref"
}

# The Debian bookworm base (lib/rootfs.sh) as a buildah image; prints its name.
local_base() {
  local tar ref
  mkdir -p "$FLYNN_CACHE/images"
  # One maker at a time: tests build images in parallel.
  exec 7>"$FLYNN_CACHE/images/.base.lock"; flock 7
  tar=$(base_rootfs)
  ref=localhost/flynn-base:$(basename "$tar" .tar | sed 's/^bookworm-base-//')
  image_from_layers "$ref" "$tar"
  exec 7>&-
  echo "$ref"
}

# image_base MAKER: the BASE build argument: empty with --public-base (the Containerfile's
# own default, pulled), else what MAKER (local_base, or the builder's local_stack) prints.
image_base() {
  if [ "$PUBLIC_BASE" = 1 ]; then echo ""; else "$1"; fi
}

# The version and revision the images are labelled with (org.opencontainers.image.*).
image_version() { sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_DIR/Cargo.toml" | head -1; }
image_revision() {
  local rev
  rev=$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null) || rev=unknown
  if [ "$rev" != unknown ] && [ -n "$(git -C "$REPO_DIR" status --porcelain 2>/dev/null)" ]; then rev=$rev-dirty; fi
  echo "$rev"
}

# image_build NAME CONTAINERFILE CONTEXT BASE: builds the Containerfile with BASE as its
# base image. Sets BUILT_TAG (a name of this build's own, so concurrent builds never
# untag each other's images; image_done drops it) and BUILT_ID (the config's digest).
image_build() {
  local name=$1 file=$2 ctx=$3 base=$4 iid out
  BUILT_TAG=localhost/flynn-$name:build-$$-$RANDOM
  iid=$(mktemp)
  # --timestamp 0: the same inputs give the same digest, so a rebuild that changed
  # nothing rolls no pod on `helm upgrade`.
  local from=(--pull=never --build-arg "BASE=$base")
  [ -n "$base" ] || from=(--pull=missing)
  out=$(bh bud --quiet "${from[@]}" --layers=false --timestamp 0 --iidfile "$iid" \
    --build-arg "VERSION=$(image_version)" --build-arg "REVISION=$(image_revision)" \
    -f "$file" -t "$BUILT_TAG" "$ctx" 2>&1) \
    || {
      echo "$out" >&2; rm -f "$iid"
      [ -n "$base" ] || die "buildah could not build $file (output above): with --public-base it pulls the Containerfile's BASE; is that registry reachable?"
      die "buildah could not build $file (output above)"
    }
  BUILT_ID=$(cat "$iid"); rm -f "$iid"
}

# Drops this build's own name (the image stays while another name holds it).
image_done() { bh rmi "$BUILT_TAG" >/dev/null 2>&1 || true; }

# image_load ID REF: imports the built image into the local node's containerd as REF.
image_load() {
  local id=$1 ref=$2 work
  [ -S "$CONTAINERD_SOCK" ] || die "the local node's containerd is not running ($CONTAINERD_SOCK): start the cluster with e2e/cluster/up"
  work=$(mktemp -d "${TMPDIR:-/tmp}/flynn-image.XXXXXX")
  bh push --quiet "$id" "oci-archive:$work/image.tar:${ref##*:}" >/dev/null \
    || { rm -rf "$work"; die "buildah could not export $ref"; }
  ctr_k8s images import --base-name "${ref%:*}" "$work/image.tar" >/dev/null \
    || { rm -rf "$work"; die "containerd did not import $ref"; }
  rm -rf "$work"
  image_present "$ref" || die "containerd did not register $ref after import"
  prune_node_images
}

# The image a tag named before keeps the digest references the CRI made for it, and the
# node's image GC is off (it shares the disk with the build caches): drop every digest
# reference no name points to any more, or each rebuild leaks its layers.
prune_node_images() {
  local listing named dangling
  listing=$(ctr_k8s images ls | awk 'NR > 1 {print $1, $3}')
  # Only what loading makes is pruned: image IDs and localhost/...@sha256 references. An
  # image the node pulled by digest from a registry (localhost:5001/...@sha256:...) has
  # no other name, and is in use.
  named=$(awk '$1 !~ /^sha256:/ && $1 !~ /^localhost\/.*@sha256:/ {print $2}' <<<"$listing" | sort -u)
  dangling=$(awk '$1 ~ /^sha256:/ || $1 ~ /^localhost\/.*@sha256:/' <<<"$listing" | while read -r r digest; do
    grep -qxF "$digest" <<<"$named" || echo "$r"
  done)
  # shellcheck disable=SC2086 # one reference per word
  [ -z "$dangling" ] || ctr_k8s images rm $dangling >/dev/null || true
}

# image_push ID REPOSITORY TAG: pushes the built image to REPOSITORY:TAG and prints
# REPOSITORY:TAG@DIGEST. Plain HTTP only for registries on this machine's loopback.
image_push() {
  local id=$1 repo=$2 tag=$3 digest out tls=true
  case $repo in localhost:*|localhost/*|127.0.0.1:*) tls=false ;; esac
  digest=$(mktemp)
  out=$(bh push --quiet --tls-verify="$tls" --digestfile "$digest" "$id" "docker://$repo:$tag" 2>&1) || {
    rm -f "$digest"
    die "pushing $repo:$tag failed: $out
(is the registry running and accepting pushes? the local one: e2e/cluster/up starts it on localhost:5001)"
  }
  echo "$repo:$tag@$(cat "$digest")"; rm -f "$digest"
}

# image_main NAME CONTAINERFILE CONTEXT BASE MODE TARGET TAG: builds, then loads (MODE
# load, TARGET unused) or pushes (MODE push, TARGET the registry); prints the reference.
image_main() {
  local name=$1 file=$2 ctx=$3 base=$4 mode=$5 target=$6 tag=$7
  image_build "$name" "$file" "$ctx" "$base"
  local id=$BUILT_ID
  case $mode in
    load)
      # Importing is the slow part: skip it when the node has this very image already
      # (the ID is the config's digest, the same for the same inputs: --timestamp 0).
      local ref=localhost/flynn-$name:$tag stamp=$FLYNN_CACHE/images/loaded-$name-$tag.id
      if [ "$(cat "$stamp" 2>/dev/null)" != "$id" ] || ! image_present "$ref"; then
        (image_load "$BUILT_TAG" "$ref") || { image_done; exit 1; }
        mkdir -p "$(dirname "$stamp")"; echo "$id" > "$stamp"
      fi
      echo "$ref" ;;
    push)
      # A refused push must not leave this build's name behind in buildah's store.
      local pushed
      pushed=$(image_push "$BUILT_TAG" "$target/flynn-$name" "$tag") || { image_done; exit 1; }
      echo "$pushed" ;;
    *) die "image_main: unknown mode $mode" ;;
  esac
  image_done
}

# Parses the options every image/build script takes into BIN_DIR_ARG, MODE, TARGET, TAG.
#   --bin-dir DIR      the prebuilt release (or test) binaries; default: cargo build --release
#   --tag TAG          image tag (default: dev)
#   --push REGISTRY    push to REGISTRY (e.g. localhost:5001) and print NAME:TAG@DIGEST
#   --load             import into the local node (the default)
#   --public-base      the Containerfile's own BASE (pulled), not the local Debian one
image_args() {
  BIN_DIR_ARG=""; MODE=load; TARGET=""; TAG=dev; PUBLIC_BASE=0
  while [ $# -gt 0 ]; do
    case $1 in
      --bin-dir) BIN_DIR_ARG=$2; shift 2 ;;
      --tag) TAG=$2; shift 2 ;;
      --push) MODE=push; TARGET=$2; shift 2 ;;
      --load) MODE=load; shift ;;
      --public-base) PUBLIC_BASE=1; shift ;;
      -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
  done
  [[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$TAG' is not a valid image tag"
}

# release_build ARGS...: `cargo build --release --locked ARGS` in the environment of a
# shell. Run from a test (e2e/tests/installed_platform.rs), cargo's own variables for the
# test (CARGO_MANIFEST_DIR, CARGO_PKG_*, LD_LIBRARY_PATH with the debug deps, ...) leaked
# into the nested build, which then rebuilt the whole workspace (8 min), and so did the
# next build from a shell.
release_build() {
  local unset=() v
  for v in $(compgen -e); do
    case $v in
      CARGO_HOME|CARGO_TARGET_DIR|CARGO_TERM_*|CARGO_BUILD_*|CARGO_INCREMENTAL|CARGO_PROFILE_*|CARGO_NET_*|CARGO_REGISTRIES_*|CARGO_HTTP_*) ;;
      CARGO|CARGO_*|LD_LIBRARY_PATH|RUST_RECURSION_COUNT|RUSTUP_TOOLCHAIN|RUSTUP_TOOLCHAIN_SOURCE) unset+=(-u "$v") ;;
    esac
  done
  (cd "$REPO_DIR" && env "${unset[@]}" cargo build --release --locked "$@")
}

# bin_dir PACKAGE: the directory holding the binaries; builds PACKAGE's release binaries
# when no --bin-dir was given.
bin_dir() {
  if [ -n "$BIN_DIR_ARG" ]; then echo "$BIN_DIR_ARG"; return; fi
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$FLYNN_CACHE/target}
  log "cargo build --release -p $1 --bins"
  release_build -p "$1" --bins >&2 || die "cargo build -p $1 failed"
  echo "$CARGO_TARGET_DIR/release"
}

# stage CONTEXT DIR BIN...: copies the named binaries from DIR into the build context.
stage() {
  local ctx=$1 dir=$2 b; shift 2
  for b in "$@"; do
    [ -x "$dir/$b" ] || die "$dir/$b is missing: build it (cargo build --release --workspace --bins) or give another --bin-dir"
    install -m 0755 "$dir/$b" "$ctx/$b"
  done
}
