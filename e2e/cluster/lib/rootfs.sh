# The base root filesystem of the platform's images: Debian bookworm (minbase)
# made with debootstrap from the same Debian mirror apt uses. A real distribution
# rather than "binaries plus their libraries", because buildpacks and app
# processes expect bash, coreutils, tar, CA certificates and a libc like the
# Heroku stack has. Cached as a tarball; rebuilt only when the package list changes.
# shellcheck shell=bash

BASE_PACKAGES=ca-certificates,curl,git,procps,netbase,tzdata,xz-utils,zstd,locales
BASE_ROOTFS_TAR=$FLYNN_CACHE/images/bookworm-base-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-8).tar

base_rootfs() { # prints the path of the cached base rootfs tarball, building it if needed
  if [ ! -f "$BASE_ROOTFS_TAR" ]; then
    local mirror dir
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    mirror=${mirror:-http://deb.debian.org/debian}
    dir=$(mktemp -d "${TMPDIR:-/tmp}/rootfs.XXXXXX")
    log "debootstrap bookworm (minbase) from $mirror into the image cache"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$dir" "$mirror" >"$dir.log" 2>&1 \
      || { tail -20 "$dir.log" >&2; die "debootstrap failed (log: $dir.log): is the Debian mirror $mirror reachable?"; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/tmp/*
    mkdir -p "$(dirname "$BASE_ROOTFS_TAR")"
    tar -C "$dir" --numeric-owner -cf "$BASE_ROOTFS_TAR.tmp" . && mv "$BASE_ROOTFS_TAR.tmp" "$BASE_ROOTFS_TAR"
    rm -rf "$dir" "$dir.log"
  fi
  echo "$BASE_ROOTFS_TAR"
}
