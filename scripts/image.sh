#!/usr/bin/env bash
# Builds the leaf-operator container image without a registry or a Docker engine:
#
#   1. a statically linked release binary (target x86_64-unknown-linux-musl: musl's own DNS
#      resolver and no dynamic loader, so the image needs no libc and no base image);
#   2. an image FROM scratch assembled with buildah: the binary at /usr/local/bin/leaf-operator,
#      the machine's CA certificates at /etc/ssl/certs/ca-certificates.crt (where rustls' native
#      certificate loader looks), /etc/passwd and /etc/group naming the non-root user 65532, and
#      USER 65532:65532 - the same runtime layout as the Dockerfile's distroless image.
#
# Prints the image reference on its last line: localhost/leaf-operator:<version>-<binary hash>
# (linux/amd64) or localhost/leaf-operator:<version>-arm64-<binary hash> (linux/arm64). The tag
# names the exact binary, so rebuilding an unchanged tree reuses the image, and two checkouts on
# one machine never overwrite each other's image.
#
# linux/arm64 is cross-built for aarch64-unknown-linux-musl with cargo-zigbuild and zig
# (scripts/release-tools.sh installs and caches them; why zig: see there). scripts/release.sh
# builds both platforms and pushes them as one multi-arch index.
#
# Usage: scripts/image.sh [--platform linux/amd64|linux/arm64] [--binary-only]
#   Push it:  buildah push localhost/leaf-operator:TAG docker://registry.example.com/leaf-operator:TAG
#             (or scripts/release.sh REGISTRY: both platforms, the chart and the SBOM)
#   Needs:    cargo, rustup (adds the musl target once), musl-tools, buildah (apt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

platform=linux/amd64
binary_only=""
while (($#)); do
  case "$1" in
    --platform) platform="$2"; shift 2 ;;
    --binary-only) binary_only=1; shift ;;
    *) echo "usage: $0 [--platform linux/amd64|linux/arm64] [--binary-only]" >&2; exit 2 ;;
  esac
done
case "$platform" in
  linux/amd64) TARGET=x86_64-unknown-linux-musl; arch=amd64; tag_arch="" ;;
  linux/arm64) TARGET=aarch64-unknown-linux-musl; arch=arm64; tag_arch="arm64-" ;;
  *) echo "error: unsupported platform $platform (linux/amd64 or linux/arm64)" >&2; exit 2 ;;
esac
REPOSITORY="${LEAF_OPERATOR_IMAGE_REPOSITORY:-localhost/leaf-operator}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
target_dir="${CARGO_TARGET_DIR:-target}"

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  echo "adding the Rust target $TARGET (once)" >&2
  rustup target add "$TARGET" >&2
fi

started=$SECONDS
if [[ "$arch" == amd64 ]]; then
  command -v musl-gcc >/dev/null 2>&1 || {
    echo "error: musl-gcc not found (aws-lc-sys compiles C for the musl target with it): apt-get install musl-tools" >&2
    exit 1
  }
  # aws-lc-sys (kube's TLS provider) compiles C for the target; the cc crate picks musl-gcc for a
  # musl target by itself.
  cargo build --release --locked --target "$TARGET" --bin leaf-operator >&2
else
  tools="$(scripts/release-tools.sh)"
  # zig compiles aws-lc-sys's C and links against its own aarch64 musl. The host's binutils
  # cannot strip an aarch64 binary, so rustc strips it at link time (a separate profile
  # setting for this target only: the amd64 build and its cache are unchanged).
  PATH="$tools:$PATH" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo zigbuild --release --locked --target "$TARGET" --bin leaf-operator >&2
fi
binary="$target_dir/$TARGET/release/leaf-operator"
echo "release binary ($platform) built in $((SECONDS - started))s: $binary ($(du -h "$binary" | cut -f1))" >&2

# A static binary has no program interpreter (no dynamic loader to find in the image).
if readelf -l "$binary" | grep -q 'Requesting program interpreter'; then
  echo "error: $binary is dynamically linked; the scratch image cannot run it" >&2
  exit 1
fi
[[ -n "$binary_only" ]] && { echo "$binary"; exit 0; }

command -v buildah >/dev/null 2>&1 || {
  echo "error: buildah not found: apt-get install buildah" >&2
  exit 1
}
[[ -s "$CA_BUNDLE" ]] || {
  echo "error: no CA bundle at $CA_BUNDLE (apt-get install ca-certificates, or set CA_BUNDLE)" >&2
  exit 1
}

# Symbols only help a debugger, which the image has none of: strip them from the copy that ships.
# (arm64: already stripped by rustc, see above.)
if [[ "$arch" == amd64 ]]; then
  stripped="$target_dir/$TARGET/release/leaf-operator.stripped"
  strip --strip-all -o "$stripped" "$binary"
  binary="$stripped"
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
hash="$(sha256sum "$binary" | cut -c1-12)"
image="$REPOSITORY:$version-$tag_arch$hash"
if buildah images --quiet "$image" >/dev/null 2>&1; then
  echo "image $image is up to date" >&2
  echo "$image"
  exit 0
fi

rootfs="$(mktemp -d)"
container=""
cleanup() {
  [[ -n "$container" ]] && buildah rm "$container" >/dev/null 2>&1 || true
  rm -rf "$rootfs"
}
trap cleanup EXIT
install -D -m 0755 "$binary" "$rootfs/usr/local/bin/leaf-operator"
install -D -m 0644 "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Names for the ids (what distroless :nonroot has); nothing in the operator needs them, but tools
# that print the user (ps, kubectl debug) do.
install -d -m 0755 "$rootfs/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

container="$(buildah from --arch "$arch" --os linux scratch)"
buildah copy --quiet "$container" "$rootfs" / >/dev/null
buildah config \
  --arch "$arch" \
  --os linux \
  --user 65532:65532 \
  --entrypoint '["/usr/local/bin/leaf-operator"]' \
  --cmd '' \
  --port 8080 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.title=leaf-operator \
  --label org.opencontainers.image.version="$version" \
  "$container"
buildah commit --quiet --rm "$container" "$image" >/dev/null
container=""
echo "image $image ($platform) built in $((SECONDS - started))s" >&2
echo "$image"
