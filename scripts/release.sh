#!/usr/bin/env bash
# Publishes a release of leaf-operator to an OCI registry, the way users pull it:
#
#   1. the image for linux/amd64 and linux/arm64 (scripts/image.sh --platform: a static musl
#      binary on scratch; arm64 cross-built with cargo-zigbuild), pushed as ONE multi-arch index
#      REGISTRY/leaf-operator:<version>;
#   2. the Helm chart, packaged with image.repository and image.digest set to that index (so
#      `helm install oci://REGISTRY/charts/leaf-operator --version <version>` runs exactly the
#      pushed image, with nothing else to set), pushed as an OCI artifact to
#      oci://REGISTRY/charts/leaf-operator (a repository of its own: the chart's tag would
#      otherwise collide with the image's);
#   3. an SBOM of the image (CycloneDX JSON from cargo-cyclonedx: the crates compiled into the
#      binary, which with the CA bundle is all the image holds), written next to the release and
#      pushed as an OCI artifact whose subject is the index (tagged sha256-<index digest hex>.sbom;
#      found through the referrers API, or on registries without it through the referrers tag
#      sha256-<index digest hex>, an index that crane keeps up to date).
#
# Everything it writes goes to OUT (default ${CARGO_TARGET_DIR:-target}/dist/<version>). Its last
# lines are machine-readable (the tests and CI parse them; `source <(scripts/release.sh R | grep
# '^release_')` sets them as shell variables):
#
#   release_image=REGISTRY/leaf-operator@sha256:...         the index, by digest
#   release_image_tag=REGISTRY/leaf-operator:<version>
#   release_chart=oci://REGISTRY/charts/leaf-operator        the chart (helm pull/install it with
#   release_chart_version=<version>                          --version, or by digest:)
#   release_chart_digest=sha256:...
#   release_sbom=OUT/leaf-operator-<version>.cdx.json
#   release_sbom_artifact=REGISTRY/leaf-operator@sha256:...  the SBOM artifact, by digest
#
# Usage: scripts/release.sh REGISTRY [--out DIR] [--plain-http]
#   e.g. scripts/release.sh ghcr.io/example        (the release workflow, after `docker login`)
#        scripts/release.sh 127.0.0.1:5000/leaf    (a local registry: plain HTTP, chosen by itself
#                                                   for localhost and 127.0.0.1, or --plain-http)
# Needs: buildah, musl-tools (apt), cargo and rustup; installs and caches the rest on first use
# (scripts/release-tools.sh: cargo-zigbuild, zig, cargo-cyclonedx; scripts/test-tools.sh: helm;
# scripts/go-tool.sh: crane). Credentials for REGISTRY are buildah's, helm's and crane's own
# (buildah login / helm registry login / crane auth login); this script never sees them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { echo "usage: $0 REGISTRY [--out DIR] [--plain-http]" >&2; exit 2; }
registry=""
out=""
plain_http=""
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --plain-http) plain_http=1; shift ;;
    -*) usage ;;
    *) [[ -z "$registry" ]] || usage; registry="${1%/}"; shift ;;
  esac
done
[[ -n "$registry" ]] || usage
case "$registry" in
  localhost:* | localhost/* | 127.0.0.1:* | 127.0.0.1/*) plain_http=1 ;;
esac

started=$SECONDS
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
chart_version="$(sed -n 's/^version: *//p' charts/leaf-operator/Chart.yaml)"
out="${out:-${CARGO_TARGET_DIR:-target}/dist/$version}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tools="$(scripts/release-tools.sh)"
helm="$(scripts/test-tools.sh --print-dir)/helm"
[[ -x "$helm" ]] || helm="$(scripts/test-tools.sh)/helm"
crane="$(scripts/go-tool.sh crane)"
export PATH="$tools:$PATH"

tls=(--tls-verify=true)
helm_http=()
crane_http=()
if [[ -n "$plain_http" ]]; then
  tls=(--tls-verify=false)
  helm_http=(--plain-http)
  crane_http=(--insecure)
fi

work="$(mktemp -d)"
manifest_list=""
cleanup() {
  [[ -n "$manifest_list" ]] && buildah manifest rm "$manifest_list" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. One image per platform, then one index holding both.
images=()
for platform in linux/amd64 linux/arm64; do
  image="$(scripts/image.sh --platform "$platform" | tail -1)"
  images+=("$image")
  echo "$platform: $image" >&2
done
repository="$registry/leaf-operator"
manifest_list="leaf-operator-release-$$"
buildah manifest create "$manifest_list" >/dev/null
for image in "${images[@]}"; do
  buildah manifest add "$manifest_list" "containers-storage:$image" >/dev/null
done
buildah manifest push --quiet --all "${tls[@]}" --format oci --digestfile "$work/index-digest" \
  "$manifest_list" "docker://$repository:$version" >&2
index_digest="$(cat "$work/index-digest")"
image_ref="$repository@$index_digest"
echo "pushed the index $image_ref" >&2

# 2. The chart, pinned to that index.
cp -r charts/leaf-operator "$work/leaf-operator"
values="$work/leaf-operator/values.yaml"
sed -i "/^image:/,/^[^ #]/{s|^  repository: .*|  repository: $repository|;s|^  digest: .*|  digest: \"$index_digest\"|}" "$values"
if ! grep -q "^  repository: $repository\$" "$values" ||
  ! grep -q "^  digest: \"$index_digest\"\$" "$values"; then
  echo "error: could not set image.repository and image.digest in the packaged chart's values.yaml" >&2
  exit 1
fi
"$helm" package "$work/leaf-operator" --destination "$out" >&2
chart_file="$out/leaf-operator-$chart_version.tgz"
"$helm" push "$chart_file" "oci://$registry/charts" "${helm_http[@]}" 2>&1 | tee "$work/helm-push" >&2
chart_digest="$(sed -n 's/^Digest: *//p' "$work/helm-push")"
[[ "$chart_digest" == sha256:* ]] || { echo "error: helm push printed no digest" >&2; exit 1; }

# 3. The SBOM: the operator package's dependency graph as built for the image (the musl target;
# both platforms compile the same crates), without dev- and build-dependencies (neither is in the
# binary). cargo-cyclonedx writes one file per workspace member, next to its Cargo.toml: keep the
# operator's, remove the stand-in's.
cargo cyclonedx --quiet --format json --spec-version 1.5 --target x86_64-unknown-linux-musl \
  --no-build-deps --override-filename leaf-operator.cdx >&2
sbom="$out/leaf-operator-$version.cdx.json"
mv leaf-operator.cdx.json "$sbom"
rm -f standin/leaf-operator.cdx.json
# An OCI artifact (image-spec 1.1) whose subject is the index: an empty config, one layer that is
# the SBOM file itself, pushed from an OCI layout with crane.
layout="$work/sbom-layout"
mkdir -p "$layout/blobs/sha256"
blob() { # FILE -> copies it into the layout, prints "DIGEST SIZE"
  local digest size
  digest="$(sha256sum "$1" | cut -d' ' -f1)"
  size="$(stat -c %s "$1")"
  cp "$1" "$layout/blobs/sha256/$digest"
  echo "sha256:$digest $size"
}
printf '{}' >"$work/empty.json"
read -r config_digest config_size < <(blob "$work/empty.json")
read -r sbom_digest sbom_size < <(blob "$sbom")
index_size="$("$crane" manifest "${crane_http[@]}" "$image_ref" | wc -c)"
index_media_type="$("$crane" manifest "${crane_http[@]}" "$image_ref" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mediaType"])')"
cat >"$work/sbom-manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cyclonedx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.cyclonedx+json","digest":"$sbom_digest","size":$sbom_size,"annotations":{"org.opencontainers.image.title":"$(basename "$sbom")"}}],"subject":{"mediaType":"$index_media_type","digest":"$index_digest","size":$index_size},"annotations":{"org.opencontainers.image.created":"$(date -u +%Y-%m-%dT%H:%M:%SZ)"}}
JSON
read -r manifest_digest manifest_size < <(blob "$work/sbom-manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$manifest_digest","size":$manifest_size}]}
JSON
sbom_tag="${index_digest/:/-}.sbom"
"$crane" push "${crane_http[@]}" "$layout" "$repository:$sbom_tag" >&2
sbom_artifact="$repository@$manifest_digest"

echo "released $version in $((SECONDS - started))s into $registry (files in $out)" >&2
echo "release_image=$image_ref"
echo "release_image_tag=$repository:$version"
echo "release_chart=oci://$registry/charts/leaf-operator"
echo "release_chart_version=$chart_version"
echo "release_chart_digest=$chart_digest"
echo "release_sbom=$sbom"
echo "release_sbom_artifact=$sbom_artifact"
