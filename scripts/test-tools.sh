#!/usr/bin/env bash
# Builds (once) and caches the real control-plane binaries the tests and the quickstart run:
# kube-apiserver and kubectl from the k8s.io/kubernetes Go module, etcd from go.etcd.io/etcd/server/v3,
# and helm. They are cached outside the checkout, keyed by version, so a fresh clone on the same
# machine (CI) finds them warm. Prints the directory holding the binaries on its last line.
#
# Usage: scripts/test-tools.sh [--print-dir]
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${LEAF_OPERATOR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leaf-operator/tools}"
# Bump BUILD_REVISION whenever the way a binary is built changes (flags, ldflags), so that every
# machine rebuilds instead of reusing binaries built the old way. r2: helm with its Makefile's
# version ldflags (its own version and the Kubernetes version it assumes without a cluster).
BUILD_REVISION="r2"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$BUILD_REVISION/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

have_all() {
  [[ -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/kubectl" && -x "$BIN_DIR/etcd" && -x "$BIN_DIR/helm" ]]
}

if have_all; then
  echo "$BIN_DIR"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is needed to build the test control plane (kube-apiserver, etcd, kubectl, helm)." >&2
  echo "       Install Go >= 1.26 (https://go.dev/doc/install, or 'apt-get install golang-go' if recent enough)" >&2
  echo "       and make sure 'go' is on PATH, then run this again." >&2
  exit 1
fi

mkdir -p "$BIN_DIR" "$CACHE_ROOT"
# Several test binaries may start at once: only one of them builds, the others wait for it.
exec 9>"$CACHE_ROOT/.build.lock"
flock 9
if have_all; then
  echo "$BIN_DIR"
  exit 0
fi

echo "building the test control plane (kube-apiserver $K8S_VERSION, kubectl, etcd $ETCD_VERSION, helm $HELM_VERSION) into $BIN_DIR; the first build takes minutes (measured times: README.md, Measured times)" >&2

export CGO_ENABLED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"

if [[ ! -x "$BIN_DIR/kube-apiserver" || ! -x "$BIN_DIR/kubectl" ]]; then
  # k8s.io/kubernetes points its staging modules at ./staging with replace lines, so `go install`
  # of it fails by design (kubernetes/kubernetes#79384). A wrapper module replaces each with its
  # published version instead.
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init leaf-operator/k8s-tools >/dev/null 2>&1
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep '=> ./staging' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >>go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$BIN_DIR/kube-apiserver.tmp" "$BIN_DIR/kube-apiserver"
  go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
  mv "$BIN_DIR/kubectl.tmp" "$BIN_DIR/kubectl"
fi

if [[ ! -x "$BIN_DIR/etcd" ]]; then
  # etcd's server module is `package main` with replace lines of its own: a separate wrapper.
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init leaf-operator/etcd-tools >/dev/null 2>&1
  echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" >>go.mod
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
    echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION" >>go.mod
  done
  cat >tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
fi

if [[ ! -x "$BIN_DIR/helm" ]]; then
  # Helm's Makefile stamps its version and the Kubernetes version that `helm template` and
  # `helm lint` assume without a cluster: the client-go it is built with, v0.X.Y -> 1.X. A plain
  # `go install` leaves that at v1.20.0, so a chart declaring `kubeVersion: ">=1.30.0-0"` would
  # not render offline (as Argo CD and CI render it). Same ldflags, computed the Makefile's way.
  helm_gomod="$(cd "$work" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$helm_gomod")"
  client_go="${client_go#v}"
  k8s_major=$(( ${client_go%%.*} + 1 ))
  k8s_minor="${client_go#*.}"; k8s_minor="${k8s_minor%%.*}"
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata="
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  GOBIN="$work/gobin" go install -trimpath -ldflags "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$work/gobin/helm" "$BIN_DIR/helm"
fi

echo "test control plane ready in $BIN_DIR" >&2
echo "$BIN_DIR"
