#!/usr/bin/env bash
# Builds activator's runtime image offline, as localhost/activator (IMAGE_TAG to change it):
#   deploy/image.sh [BINARY]        default BINARY: target/release/activator
# No base image and no registry: the root filesystem is Debian 12's libc6, libgcc-s1 and
# ca-certificates (apt-get download, dpkg -x; cached in target/image-debs), the stripped binary
# at /usr/local/bin/activator, jobs/ and sql/ under /app, and a passwd naming the non-root user
# 65532. `buildah bud --timestamp 0` makes the build reproducible: the same files give the same
# image id. deploy/Containerfile builds the same runtime from source on a distroless base, for
# builds that reach a registry.
#
# Needs buildah (Debian: apt-get install buildah podman runc), apt-get, dpkg and strip. Run the
# image with runc on machines where crun fails (cgroups in hybrid mode):
#   podman --runtime runc run --rm --network=none --read-only \
#     --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 localhost/activator --version
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
binary="${1:-$repo/target/release/activator}"
tag="${IMAGE_TAG:-localhost/activator}"

if [ ! -x "$binary" ]; then
    echo "deploy/image.sh: $binary is not an executable: build it (cargo build --release) or pass its path" >&2
    exit 2
fi
for tool in buildah apt-get dpkg strip; do
    if ! command -v "$tool" >/dev/null; then
        echo "deploy/image.sh: $tool is missing (Debian: apt-get install buildah podman runc binutils)" >&2
        exit 2
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"

# The runtime's Debian packages, downloaded once.
debs="$repo/target/image-debs"
mkdir -p "$debs"
for package in libc6 libgcc-s1 ca-certificates; do
    if ! ls "$debs/${package}_"*.deb >/dev/null 2>&1; then
        (cd "$debs" && apt-get download -q "$package" 2>/dev/null) || {
            echo "deploy/image.sh: cannot download $package; run apt-get update first" >&2
            exit 3
        }
    fi
done
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$rootfs"
done
# What a static-ish Rust binary does not use: documentation, locales, charset converters, the
# package's maintenance scripts.
rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/lintian" \
    "$rootfs/usr/share/locale" "$rootfs/usr/lib/x86_64-linux-gnu/gconv" \
    "$rootfs/usr/lib/aarch64-linux-gnu/gconv" "$rootfs/usr/sbin" "$rootfs/etc/ca-certificates" 2>/dev/null || true

# Of glibc's libraries, those a Rust binary loads: libc, libm, the loader, and the NSS and
# resolver modules getaddrinfo uses (libgcc_s comes from its own package).
for lib in "$rootfs"/lib/*-linux-gnu/*.so*; do
    case "$(basename "$lib")" in
        libc.so.*|libm.so.*|ld-linux*|libgcc_s.so.*|libnss_files.so.*|libnss_dns.so.*|libresolv.so.*|libpthread.so.*|libdl.so.*|librt.so.*) ;;
        *) rm -f "$lib" ;;
    esac
done

# One CA bundle, as Debian's update-ca-certificates would write it.
mkdir -p "$rootfs/etc/ssl/certs"
cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt > "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs/usr/share/ca-certificates"

# The non-root user, a home and a scratch folder for TMPDIR (a writable volume on AWS Batch).
mkdir -p "$rootfs/etc" "$rootfs/home/nonroot" "$rootfs/tmp"
echo "root:x:0:0:root:/root:/sbin/nologin" > "$rootfs/etc/passwd"
echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >> "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"

mkdir -p "$rootfs/usr/local/bin" "$rootfs/app"
install -m 0755 "$binary" "$rootfs/usr/local/bin/activator"
strip --strip-all "$rootfs/usr/local/bin/activator"
cp -r "$repo/jobs" "$repo/sql" "$rootfs/app/"

cp "$repo/deploy/Containerfile.scratch" "$work/Containerfile"
buildah bud --quiet --timestamp 0 -f "$work/Containerfile" -t "$tag" "$work" >/dev/null
echo "built $tag: image $(buildah inspect --format '{{.FromImageID}}' "$tag"), $(du -sk "$rootfs" | cut -f1) KiB of files"
