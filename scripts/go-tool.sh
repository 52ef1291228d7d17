#!/usr/bin/env bash
# Builds (once) and caches one of the Go test tools that prove what other programs make of this
# project's files, and prints the binary's path on its last line:
#
#   kstatus     Flux's status library (sigs.k8s.io/cli-utils/pkg/kstatus/status) behind a tiny main
#               (scripts/go-tools/kstatus): what Flux says about a TrimbleConnection.
#   argocd-lua  gopher-lua (github.com/yuin/gopher-lua), the Lua 5.1 engine Argo CD embeds, behind a
#               tiny main (scripts/go-tools/argocd-lua) that opens only the libraries Argo CD opens.
#   promtool    Prometheus's promtool (github.com/prometheus/prometheus/cmd/promtool), for
#               `promtool test rules` on the chart's PrometheusRule.
#   crane       go-containerregistry's crane (github.com/google/go-containerregistry/cmd/crane): the
#               tests' local OCI registry (`crane registry serve`) and the release test's reader of
#               manifests, configs and layers (scripts/release.sh pushes there).
#
# Like scripts/test-tools.sh: built from Go modules (nothing else is downloaded), cached outside the
# checkout keyed by module version (and, for the two small mains, a hash of their source), so a
# fresh clone on the same machine finds them warm; concurrent callers wait for one build (flock).
#
# Usage: scripts/go-tool.sh kstatus|argocd-lua|promtool|crane [--print-path]
set -euo pipefail

CLI_UTILS_VERSION="${CLI_UTILS_VERSION:-v0.37.2}"
GOPHER_LUA_VERSION="${GOPHER_LUA_VERSION:-v1.1.2}"
# Prometheus publishes its Go module as v0.<major*100+minor>.<patch>: v0.316.0 is Prometheus 3.16.0,
# the newest that builds with Go 1.26.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
GO_CONTAINERREGISTRY_VERSION="${GO_CONTAINERREGISTRY_VERSION:-v0.22.1}"
CACHE_ROOT="${LEAF_OPERATOR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leaf-operator/tools}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

tool="${1:-}"
source_hash() { sha256sum "$HERE/go-tools/$1/main.go" | cut -c1-12; }
case "$tool" in
  kstatus) key="kstatus-cli-utils-$CLI_UTILS_VERSION-$(source_hash kstatus)" ;;
  argocd-lua) key="argocd-lua-gopher-lua-$GOPHER_LUA_VERSION-$(source_hash argocd-lua)" ;;
  promtool) key="promtool-$PROMETHEUS_MODULE_VERSION-remove_all_sd" ;;
  crane) key="crane-$GO_CONTAINERREGISTRY_VERSION" ;;
  *)
    echo "usage: $0 kstatus|argocd-lua|promtool|crane [--print-path]" >&2
    exit 2
    ;;
esac
binary="$CACHE_ROOT/$key/$tool"

if [[ "${2:-}" == "--print-path" || -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go >= 1.26 is needed to build $tool (the tests run it); install it and put 'go' on PATH." >&2
  exit 1
fi

mkdir -p "$CACHE_ROOT/$key"
exec 9>"$CACHE_ROOT/.build-$tool.lock"
flock 9
if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

echo "building $tool into $CACHE_ROOT/$key (once; cached for every clone on this machine)" >&2
started=$SECONDS
export CGO_ENABLED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A wrapper module around a small main: requires exactly the pinned version of the library.
build_main() {
  local module="$1" version="$2"
  cp "$HERE/go-tools/$tool/main.go" "$work/main.go"
  cd "$work"
  go mod init "leaf-operator/$tool" >/dev/null 2>&1
  go get "$module@$version" >/dev/null 2>&1 || go get "$module@$version"
  go mod tidy >/dev/null 2>&1 || go mod tidy
  # tidy may raise the library to what another requirement needs; insist on the pinned version.
  local got
  got="$(go list -m -f '{{.Version}}' "$module")"
  if [[ "$got" != "$version" ]]; then
    echo "error: $module resolved to $got, not $version" >&2
    exit 1
  fi
  go build -trimpath -ldflags "-s -w" -o "$binary.tmp" .
}

case "$tool" in
  kstatus) build_main sigs.k8s.io/cli-utils "$CLI_UTILS_VERSION" ;;
  argocd-lua) build_main github.com/yuin/gopher-lua "$GOPHER_LUA_VERSION" ;;
  promtool)
    # Prometheus's go.mod has no replace lines, so `go install module@version` works. The version
    # ldflag is the one its .promu.yml sets, so `promtool --version` tells the truth. The
    # remove_all_sd tag leaves out every service-discovery plugin (AWS, Azure, GCE, Kubernetes...):
    # `promtool test rules` needs none, and the full build took 43 minutes on two busy cores.
    minor="${PROMETHEUS_MODULE_VERSION#v0.}"; minor="${minor%%.*}"
    patch="${PROMETHEUS_MODULE_VERSION##*.}"
    release="$((minor / 100)).$((minor % 100)).$patch"
    GOBIN="$work/bin" go install -trimpath -tags remove_all_sd \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
      "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
    mv "$work/bin/promtool" "$binary.tmp"
    ;;
  crane)
    # cmd/crane lives in the go-containerregistry module itself (no replace lines), so
    # `go install module@version` works; the version ldflag makes `crane version` tell the truth.
    GOBIN="$work/bin" go install -trimpath \
      -ldflags "-s -w -X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$GO_CONTAINERREGISTRY_VERSION" \
      "github.com/google/go-containerregistry/cmd/crane@$GO_CONTAINERREGISTRY_VERSION"
    mv "$work/bin/crane" "$binary.tmp"
    ;;
esac
mv "$binary.tmp" "$binary"
echo "built $tool in $((SECONDS - started))s" >&2
echo "$binary"
