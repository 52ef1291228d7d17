#!/usr/bin/env bash
# Builds (once) and caches the benchmark's peer: Crossplane's provider-http, the generic HTTP
# provider a platform team would wire Leaf with instead of this operator (BENCHMARKS.md, "Side by
# side"). Built from its Go module like scripts/test-tools.sh builds the control plane: `go install` of a released version
# whose go.mod has no replace lines, CGO_ENABLED=0, cached outside the checkout keyed by version,
# concurrent callers serialised with flock. Its CRDs are copied from the module's package/crds.
# Prints the directory holding `provider-http` and `crds/` on its last line.
#
# Usage: scripts/peer-tools.sh [--print-dir]
#
# The Go proxy here refuses to list provider-http's versions (403) and refuses v1.0.8 and v1.0.13;
# v1.0.14 (Crossplane runtime v2, go.mod without replace lines) is served and builds with Go 1.26.
set -euo pipefail

PROVIDER_HTTP_VERSION="${PROVIDER_HTTP_VERSION:-v1.0.14}"
CACHE_ROOT="${LEAF_OPERATOR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leaf-operator/tools}"
PEER_DIR="$CACHE_ROOT/provider-http-$PROVIDER_HTTP_VERSION"
MODULE="github.com/crossplane-contrib/provider-http"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$PEER_DIR"
  exit 0
fi

have_all() {
  [[ -x "$PEER_DIR/bin/provider-http" && -f "$PEER_DIR/crds/http.crossplane.io_requests.yaml" ]]
}

if have_all; then
  echo "$PEER_DIR"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go >= 1.26 is needed to build the benchmark's peer (provider-http $PROVIDER_HTTP_VERSION)." >&2
  exit 1
fi

mkdir -p "$CACHE_ROOT"
# Its own lock: the peer's build must not wait for (or block) the control plane's.
exec 9>"$CACHE_ROOT/.peer-build.lock"
flock 9
if have_all; then
  echo "$PEER_DIR"
  exit 0
fi

echo "building the benchmark's peer (provider-http $PROVIDER_HTTP_VERSION) into $PEER_DIR" >&2
started=$SECONDS
export CGO_ENABLED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

gomod="$(go mod download -json "$MODULE@$PROVIDER_HTTP_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
if grep -q '^replace\|^[[:space:]]*replace ' "$gomod"; then
  echo "error: $MODULE@$PROVIDER_HTTP_VERSION has replace directives in its go.mod; go install cannot build it" >&2
  exit 1
fi
moddir="$(go mod download -json "$MODULE@$PROVIDER_HTTP_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"

# `go install MODULE/cmd/provider@VERSION` would be the one-liner, but it also asks the proxy for
# the module's version list (to report a deprecation), which this proxy refuses. A wrapper module
# that requires exactly this version builds the same thing: with no other requirement, minimal
# version selection picks exactly the dependency versions of provider-http's own go.mod.
mkdir -p "$work/wrapper" "$work/out/bin" "$work/out/crds"
cd "$work/wrapper"
go mod init leaf-operator/peer-tools >/dev/null 2>&1
echo "require $MODULE $PROVIDER_HTTP_VERSION" >>go.mod
cat >tools.go <<GO
//go:build tools

package tools

import _ "$MODULE/cmd/provider"
GO
go mod tidy >/dev/null 2>&1 || go mod tidy
go build -trimpath -ldflags "-s -w" -o "$work/out/bin/provider-http" "$MODULE/cmd/provider"
cd - >/dev/null
cp "$moddir"/package/crds/*.yaml "$work/out/crds/"
chmod -R u+w "$work/out"
echo "$PROVIDER_HTTP_VERSION" >"$work/out/VERSION"
rm -rf "$PEER_DIR"
mv "$work/out" "$PEER_DIR"

echo "provider-http $PROVIDER_HTTP_VERSION ready in $PEER_DIR (built in $((SECONDS - started)) s)" >&2
echo "$PEER_DIR"
