#!/usr/bin/env bash
# Runs the Argo CD health check's test cases (health/withleaf.io/TrimbleConnection/health_test.yaml,
# Argo CD's resource_customizations format) under a real Lua interpreter. The runner is the Rust
# test `argo_cd_health_check_*` in tests/install.rs, which also runs with `cargo test`; it turns
# each YAML input into the Lua table Argo CD would pass as `obj`.
#
# Needs: lua5.4 (`apt-get install -y lua5.4`), or LUA=/path/to/lua.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v "${LUA:-lua5.4}" >/dev/null 2>&1 && ! command -v lua >/dev/null 2>&1; then
  echo "error: no Lua interpreter: apt-get install -y lua5.4 (or set LUA=/path/to/lua)" >&2
  exit 1
fi
exec cargo test --test install -- argo_cd_health
