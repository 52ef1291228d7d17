#!/usr/bin/env bash
# Installs (once) and caches the tools scripts/release.sh needs besides cargo, buildah and helm,
# and prints the directory to put on PATH on its last line:
#
#   cargo-zigbuild   (crates.io) links the arm64 binary with zig: the C in aws-lc-sys (kube's TLS
#                    provider) needs a C compiler and a libc for aarch64-unknown-linux-musl, and
#                    zig brings both for every target in one package. Debian's cross gcc
#                    (gcc-aarch64-linux-gnu) is for glibc only, and musl-tools is for the host.
#   zig              (PyPI's ziglang wheel: the official zig build, no other download).
#   cargo-cyclonedx  (crates.io) writes the SBOM (CycloneDX JSON) from cargo's own dependency
#                    graph: the image holds one Rust binary and a CA bundle, so the crates compiled
#                    into it, with their versions and licences, are what an SBOM of it must list.
#                    syft would only find them in a binary built with cargo-auditable, and is a
#                    large Go build.
#
# and the Rust targets x86_64- and aarch64-unknown-linux-musl (rustup). Everything is keyed by
# version under ~/.cache/leaf-operator/tools (like scripts/test-tools.sh), so a fresh clone on the
# same machine finds it warm; concurrent callers wait for one install (flock).
#
# Usage: scripts/release-tools.sh        (prints the bin directory)
set -euo pipefail

CARGO_ZIGBUILD_VERSION="${CARGO_ZIGBUILD_VERSION:-0.24.1}"
ZIGLANG_VERSION="${ZIGLANG_VERSION:-0.15.2}"
CARGO_CYCLONEDX_VERSION="${CARGO_CYCLONEDX_VERSION:-0.5.9}"
CACHE_ROOT="${LEAF_OPERATOR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leaf-operator/tools}"
key="release-zigbuild-$CARGO_ZIGBUILD_VERSION-zig-$ZIGLANG_VERSION-cyclonedx-$CARGO_CYCLONEDX_VERSION"
dir="$CACHE_ROOT/$key"
bin="$dir/bin"

for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "adding the Rust target $target (once)" >&2
    rustup target add "$target" >&2
  fi
done

if [[ -x "$bin/cargo-zigbuild" && -x "$bin/cargo-cyclonedx" && -x "$bin/zig" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-release-tools.lock"
flock 9
if [[ -x "$bin/cargo-zigbuild" && -x "$bin/cargo-cyclonedx" && -x "$bin/zig" ]]; then
  echo "$bin"
  exit 0
fi

echo "installing the release tools into $dir (once; cached for every clone on this machine)" >&2
started=$SECONDS
mkdir -p "$bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ ! -x "$bin/zig" ]]; then
  command -v python3 >/dev/null 2>&1 || {
    echo "error: python3 with pip is needed to install zig (PyPI's ziglang): apt-get install python3-pip" >&2
    exit 1
  }
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$work/ziglang" "ziglang==$ZIGLANG_VERSION" >&2
  rm -rf "$dir/ziglang"
  mv "$work/ziglang" "$dir/ziglang"
  # zig finds its lib/ next to its real path, so a symlink on PATH is enough.
  ln -sf "../ziglang/ziglang/zig" "$bin/zig"
fi
install_crate() {
  local crate="$1" version="$2"
  [[ -x "$bin/$crate" ]] && return
  # Its own target directory, removed afterwards: these builds are not worth keeping. A debug
  # build: each tool runs for a second per release, and an optimised build of them would double a
  # cold CI run's share of this step (measured: 8 min 57 s in release mode).
  cargo install --quiet --locked --debug --root "$work/root" --target-dir "$work/target" \
    "$crate@$version" >&2
  mv "$work/root/bin/$crate" "$bin/$crate"
}
install_crate cargo-zigbuild "$CARGO_ZIGBUILD_VERSION"
install_crate cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
"$bin/zig" version >/dev/null
echo "installed the release tools in $((SECONDS - started))s" >&2
echo "$bin"
