#!/usr/bin/env bash
# Builds (once) and caches what a real one-node cluster needs beside the control plane of
# scripts/test-tools.sh, for tests/node.rs (docs: tests/support/node/mod.rs):
#
#   kubelet, kube-controller-manager, kube-scheduler, kube-proxy
#       from the k8s.io/kubernetes Go module, through the same wrapper module as test-tools.sh
#       (kubernetes#79384), same K8S_VERSION, so the node matches the API server;
#   containerd, containerd-shim-runc-v2, ctr
#       from github.com/containerd/containerd/v2: Kubernetes 1.35 was the last release to support
#       containerd 1.x (the kubelet takes the cgroup driver from the runtime over CRI, the
#       RuntimeConfig call 1.x lacks), and Debian's 1.6.20 is out of support upstream;
#   bridge, host-local, loopback, portmap
#       the CNI reference plugins from github.com/containernetworking/plugins, for Pod networking;
#   pause.tar
#       the sandbox image (no registry is reachable to pull registry.k8s.io/pause): a static
#       pause binary compiled here (scripts/node/pause.c, with musl-gcc) in an image FROM scratch
#       built with buildah, saved as an OCI archive that tests import into containerd.
#
# runc comes from apt (scripts/test.sh installs it): the image test already runs it on this
# machine kind. Everything is cached outside the checkout, keyed by versions, like test-tools.sh.
# Prints the directory holding the binaries on its last line.
#
# Usage: scripts/node-tools.sh [--print-dir]
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.10.0}"
CACHE_ROOT="${LEAF_OPERATOR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leaf-operator/tools}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Bump when the way something is built changes, so every machine rebuilds.
BUILD_REVISION="r1"
pause_hash="$(sha256sum "$HERE/node/pause.c" | cut -c1-12)"
BIN_DIR="$CACHE_ROOT/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-cni-$CNI_PLUGINS_VERSION-pause-$pause_hash-$BUILD_REVISION/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

K8S_BINARIES=(kubelet kube-controller-manager kube-scheduler kube-proxy)
CONTAINERD_BINARIES=(containerd containerd-shim-runc-v2 ctr)
CNI_BINARIES=(bridge host-local loopback portmap)

have_all() {
  local b
  for b in "${K8S_BINARIES[@]}" "${CONTAINERD_BINARIES[@]}" "${CNI_BINARIES[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] || return 1
  done
  [[ -s "$BIN_DIR/pause.tar" ]]
}

if have_all; then
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null 2>&1 || {
  echo "error: Go >= 1.26 is needed to build the node (kubelet, containerd, CNI plugins); put 'go' on PATH." >&2
  exit 1
}

mkdir -p "$BIN_DIR" "$CACHE_ROOT"
# Concurrent callers wait for one build.
exec 9>"$CACHE_ROOT/.node-build.lock"
flock 9
if have_all; then
  echo "$BIN_DIR"
  exit 0
fi
echo "building the test node (kubelet $K8S_VERSION, containerd $CONTAINERD_VERSION, CNI plugins $CNI_PLUGINS_VERSION) into $BIN_DIR; the first build takes minutes (README.md, Measured times)" >&2

export CGO_ENABLED=0
work="$(mktemp -d)"
container=""
cleanup() {
  [[ -n "$container" ]] && buildah rm "$container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

missing() {
  local b
  for b in "$@"; do [[ -x "$BIN_DIR/$b" ]] || return 0; done
  return 1
}

if missing "${K8S_BINARIES[@]}"; then
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  staging_version="v0.${K8S_VERSION#v1.}"
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init leaf-operator/k8s-node-tools >/dev/null 2>&1
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep '=> ./staging' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >>go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${K8S_BINARIES[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  } >tools.go
  go mod tidy >/dev/null 2>&1 || go mod tidy
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for b in "${K8S_BINARIES[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] && continue
    started=$SECONDS
    go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    echo "built $b in $((SECONDS - started))s" >&2
  done
fi

if missing "${CONTAINERD_BINARIES[@]}"; then
  mkdir -p "$work/containerd" && cd "$work/containerd"
  go mod init leaf-operator/containerd-tools >/dev/null 2>&1
  echo "require github.com/containerd/containerd/v2 $CONTAINERD_VERSION" >>go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${CONTAINERD_BINARIES[@]}"; do printf '\t_ "github.com/containerd/containerd/v2/cmd/%s"\n' "$b"; done
    printf ')\n'
  } >tools.go
  go mod tidy >/dev/null 2>&1 || go mod tidy
  # The tags leave out the snapshotters that need C libraries or kernel features this machine
  # lacks; overlayfs and native remain. The version is stamped the way containerd's Makefile does.
  tags="no_btrfs no_devmapper no_zfs"
  ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for b in "${CONTAINERD_BINARIES[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] && continue
    started=$SECONDS
    go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$BIN_DIR/$b.tmp" "github.com/containerd/containerd/v2/cmd/$b"
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    echo "built $b in $((SECONDS - started))s" >&2
  done
fi

if missing "${CNI_BINARIES[@]}"; then
  started=$SECONDS
  mkdir -p "$work/cni" && cd "$work/cni"
  go mod init leaf-operator/cni-tools >/dev/null 2>&1
  echo "require github.com/containernetworking/plugins $CNI_PLUGINS_VERSION" >>go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/main/bridge"\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/main/loopback"\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/ipam/host-local"\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/meta/portmap"\n'
    printf ')\n'
  } >tools.go
  go mod tidy >/dev/null 2>&1 || go mod tidy
  for path in main/bridge main/loopback ipam/host-local meta/portmap; do
    b="${path#*/}"
    go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/$b.tmp" "github.com/containernetworking/plugins/plugins/$path"
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
  done
  echo "built the CNI plugins in $((SECONDS - started))s" >&2
fi

if [[ ! -s "$BIN_DIR/pause.tar" ]]; then
  command -v musl-gcc >/dev/null 2>&1 || { echo "error: musl-gcc not found: apt-get install musl-tools" >&2; exit 1; }
  command -v buildah >/dev/null 2>&1 || { echo "error: buildah not found: apt-get install buildah" >&2; exit 1; }
  mkdir -p "$work/pause/rootfs"
  musl-gcc -Os -static -o "$work/pause/rootfs/pause" "$HERE/node/pause.c"
  strip "$work/pause/rootfs/pause"
  container="$(buildah from scratch)"
  buildah copy --quiet "$container" "$work/pause/rootfs/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$container"
  image="localhost/leaf-operator-test/pause:$pause_hash"
  buildah commit --quiet --rm "$container" "$image" >/dev/null
  container=""
  buildah push --quiet "$image" "oci-archive:$BIN_DIR/pause.tar.tmp:$image" >/dev/null
  buildah rmi "$image" >/dev/null 2>&1 || true
  mv "$BIN_DIR/pause.tar.tmp" "$BIN_DIR/pause.tar"
  echo "$image" >"$BIN_DIR/pause.ref"
fi

echo "test node ready in $BIN_DIR" >&2
echo "$BIN_DIR"
