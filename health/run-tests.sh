#!/usr/bin/env bash
# Runs the Argo CD health check's test cases (health/withleaf.io/TrimbleConnection/health_test.yaml,
# Argo CD's resource_customizations format) twice: under gopher-lua, the Lua 5.1 engine Argo CD
# embeds, with only the libraries Argo CD opens for a health check (scripts/go-tool.sh argocd-lua,
# built from its Go module), and under Lua 5.4. The runners are the Rust tests `argo_cd_health_*`
# in tests/install_gitops.rs, which also run with `cargo test`.
#
# Needs: Go >= 1.26 (gopher-lua), lua5.4 (`apt-get install -y lua5.4`, or LUA=/path/to/lua).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v "${LUA:-lua5.4}" >/dev/null 2>&1 && ! command -v lua >/dev/null 2>&1; then
  echo "error: no Lua interpreter: apt-get install -y lua5.4 (or set LUA=/path/to/lua)" >&2
  exit 1
fi
exec cargo test --test install_gitops -- argo_cd_health
