#!/usr/bin/env bash
# The test command (README.md, "Two commands on a fresh machine"): installs or builds whatever the
# tests need, then runs them. Prints how long each step took.
#
#   1. prerequisites: the apt packages the tests run (openssl, lua5.4, util-linux for flock, curl,
#      buildah, podman, runc, musl-tools, binutils, qemu-user-static, python3-pip, iptables,
#      iproute2; with sudo unless run as root), a Rust toolchain through rustup if cargo is
#      missing, its musl targets, and the rustfmt and clippy components (.ci/run's checks); Go >=
#      1.26 must be installed already (the run fails with how to get it);
#   2. the control-plane binaries (scripts/test-tools.sh), the test node's (scripts/node-tools.sh),
#      the Go tools kstatus, argocd-lua, promtool and crane (scripts/go-tool.sh), the release
#      tools cargo-zigbuild, zig and cargo-cyclonedx (scripts/release-tools.sh), the image for
#      linux/amd64 and linux/arm64 (scripts/image.sh) and the benchmark's peer
#      (scripts/peer-tools.sh), each built once and cached under ~/.cache/leaf-operator/tools (the
#      binaries in cargo's target directory);
#   3. `cargo test --workspace --no-fail-fast`, then the simulation's mutation run
#      (`cargo test --features mutations --test simulation mutation_caught`).
#
# A step that fails stops the run with its exit status; nothing is skipped: a test whose tool
# cannot be had fails. `--no-fail-fast` still runs every test binary before cargo reports failure.
#
# Usage: scripts/test.sh [CARGO TEST ARGUMENTS...]
#   With arguments, steps 1 and 2 run as always, then only
#   `cargo test --workspace --no-fail-fast ARGUMENTS...` (no mutation run), e.g.
#   scripts/test.sh --test controller_doubt
#   scripts/test.sh --test simulation -- --nocapture
#
# .ci/run sources this file (which then only defines test_prerequisites and test_run) so that CI
# runs these very steps, with its format and lint checks between them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/steps.sh
source scripts/lib/steps.sh

export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"

apt_install() {
  local missing=()
  local command package
  for pair in "$@"; do
    command="${pair%%:*}"
    package="${pair#*:}"
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
  done
  if ((${#missing[@]})); then
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

install_prerequisites() {
  # openssl: the test control plane's certificates; lua5.4: the Argo CD health check's tests;
  # flock (util-linux): scripts/test-tools.sh serialises concurrent builds with it; buildah, podman
  # and runc: the image test builds the image and runs it (crun does not work on this machine
  # kind); musl-gcc: the image's static binary (and the test node's pause); readelf (binutils):
  # checks that it is static; qemu-aarch64-static: tests/release.rs runs the arm64 binary (no
  # binfmt registration needed); python3 and pip: scripts/release-tools.sh installs zig from
  # PyPI's ziglang wheel; iptables: kube-proxy of the test node (tests/node.rs); ip (iproute2):
  # its bridge.
  apt_install openssl:openssl lua5.4:lua5.4 flock:util-linux curl:curl \
    buildah:buildah podman:podman runc:runc musl-gcc:musl-tools readelf:binutils \
    qemu-aarch64-static:qemu-user-static python3:python3 iptables:iptables ip:iproute2
  python3 -m pip --version >/dev/null 2>&1 || apt_install pip3:python3-pip

  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi
  local installed
  installed="$(rustup component list --installed 2>/dev/null || true)"
  for component in rustfmt clippy; do
    grep -q "^$component" <<<"$installed" || rustup component add "$component"
  done
  # The image's binary is linked statically against musl (scripts/image.sh), for linux/amd64 and
  # linux/arm64 (scripts/release.sh).
  for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  done

  if ! command -v go >/dev/null 2>&1; then
    echo "error: Go >= 1.26 is needed to build the test control plane (kube-apiserver, etcd, kubectl, helm);" >&2
    echo "       install it from https://go.dev/doc/install and put it on PATH." >&2
    exit 1
  fi
  cargo --version
  go version
}

# Steps 1 and 2: everything the tests need, installed or built (cached: 0 s once done).
test_prerequisites() {
  step "install prerequisites" install_prerequisites
  # The first run builds kube-apiserver, kubectl, etcd and helm from their Go modules (times: the
  # README's "Measured times"); later runs find them cached.
  step "control-plane binaries" scripts/test-tools.sh
  # The one-node cluster of tests/node.rs: kubelet, kube-controller-manager, kube-scheduler and
  # kube-proxy from the same Kubernetes module, containerd and the CNI plugins from theirs, and
  # the sandbox image; built once, cached like the control plane.
  step "node binaries" scripts/node-tools.sh
  # The Go tools that prove what Flux (kstatus), Argo CD (gopher-lua) and Prometheus (promtool)
  # make of the project's files; built once, cached like the control plane. Built here (not lazily
  # by the tests) so that their cost shows in the timings.
  step "go tool kstatus" scripts/go-tool.sh kstatus
  step "go tool argocd-lua" scripts/go-tool.sh argocd-lua
  step "go tool promtool" scripts/go-tool.sh promtool
  # The tests' local OCI registry (tests/support/registry.rs) and reader of what is pushed there.
  step "go tool crane" scripts/go-tool.sh crane
  # The static release binary and the FROM-scratch image tests/image.rs runs (incremental).
  step "image" scripts/image.sh
  # scripts/release.sh's tools (cargo-zigbuild, zig, cargo-cyclonedx; installed once, cached) and
  # its arm64 image (cross-built, incremental), which tests/release.rs pushes with the amd64 one.
  step "release tools" scripts/release-tools.sh
  step "image linux/arm64" scripts/image.sh --platform linux/arm64
  # The benchmark's peer, Crossplane's provider-http (BENCHMARKS.md, side by side), for
  # tests/peer_features.rs and peer_benchmark_harness_runs_at_n10. Its cold build time is in the
  # README's "Measured times"; later runs find it cached.
  step "peer binary (provider-http)" scripts/peer-tools.sh
}

# Step 3: the tests; with arguments, only `cargo test --workspace --no-fail-fast ARGUMENTS...`.
test_run() {
  if (($#)); then
    step "cargo test" cargo test --workspace --no-fail-fast "$@"
    return
  fi
  step "cargo test" cargo test --workspace --no-fail-fast
  # The wrong rules of the decision core the simulation must catch, behind the test-only feature
  # `mutations` (the rules the simulation breaks itself run in the step above).
  step "simulation mutations" cargo test --features mutations --test simulation mutation_caught
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  test_prerequisites
  test_run "$@"
fi
