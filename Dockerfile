# syntax=docker/dockerfile:1
# leaf-operator image: built with the Rust toolchain, run on a distroless base as uid 65532.
#
#   docker build -t leaf-operator:0.1.0 .
#
# For users with a registry to pull the base images from. Without one (as on this project's
# machines), scripts/image.sh builds an image with the same runtime layout FROM scratch (a static
# musl binary at /usr/local/bin/leaf-operator, CA certificates at
# /etc/ssl/certs/ca-certificates.crt, USER 65532:65532), which tests/image.rs runs as the chart's Pod.
#
# Two stages: the builder compiles a release binary (dependencies cached by BuildKit between
# builds); the runtime stage is distroless "cc" (glibc, libgcc, CA certificates, no shell, no
# package manager) with only that binary, running as the non-root user the chart expects.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# The whole workspace: the root crate and its member crate `standin` (needed to resolve the
# workspace, not compiled into the image). .dockerignore keeps target/ and .git out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin leaf-operator \
    && install -D -m 0755 target/release/leaf-operator /out/leaf-operator

# Debian 12 matches the builder's glibc; the :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/leaf-operator /usr/local/bin/leaf-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/leaf-operator"]
