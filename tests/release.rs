//! The release path, `scripts/release.sh REGISTRY`, run against the tests' local registry
//! (`support::registry`): what it pushes is read back the way a cluster and a user would read it.
//!
//! - the image is ONE index holding exactly linux/amd64 and linux/arm64; each platform's config
//!   names its architecture, and its binary is a static ELF for that machine;
//! - the arm64 binary runs (`--version`) under qemu-user (Debian's qemu-aarch64-static; no binfmt
//!   registration needed, the emulator is given the binary);
//! - the chart, pulled back from `oci://` by digest, renders with the image set to the index by
//!   digest and nothing else set;
//! - the SBOM names the operator and the crates compiled into it, with the versions of Cargo.lock,
//!   and is attached to the index as an OCI artifact.
//!
//! The script runs once per test binary (`support::release`; a cold run builds two release
//! binaries: minutes); the tests share its result. GitHub's part of a release (OIDC, ghcr, cosign) cannot run here:
//! .github/workflows/release.yml says so.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use support::install::{documents, expect_success, one, text};
use support::release::shared_release as release;
use support::{Registry, repo_root, tool_bin_dir};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"))
}

/// `REPOSITORY@sha256:...` -> (`REPOSITORY`, `sha256:...`).
fn split_digest(reference: &str) -> (&str, &str) {
    let (repository, digest) = reference
        .split_once('@')
        .unwrap_or_else(|| panic!("{reference} is not a reference by digest"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{reference}: not a sha256 digest"
    );
    (repository, digest)
}

/// The ELF header fields that matter here: the machine, and whether a program interpreter (a
/// dynamic loader, which a scratch image does not have) is requested.
struct Elf {
    machine: u16,
    interpreter: bool,
}

fn read_elf(bytes: &[u8]) -> Elf {
    assert!(bytes.len() > 64, "not an ELF file: {} bytes", bytes.len());
    assert_eq!(&bytes[..4], b"\x7fELF", "no ELF magic");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    assert_eq!(bytes[5], 1, "not little-endian");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    const PT_INTERP: u32 = 3;
    let interpreter = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    Elf {
        machine: u16_at(18),
        interpreter,
    }
}

/// The operator binary of the image `reference` (`crane export`, then its one file).
fn binary_of(registry: &Registry, reference: &str, dir: &Path) -> PathBuf {
    let tar = dir.join("rootfs.tar");
    registry.crane(&["export", reference, tar.to_str().unwrap()]);
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .arg("usr/local/bin/leaf-operator")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{reference} has no usr/local/bin/leaf-operator"
    );
    dir.join("usr/local/bin/leaf-operator")
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

#[tokio::test]
async fn release_pushes_one_index_with_static_linux_amd64_and_arm64_images() {
    let release = release().await;
    let registry = release.registry;
    let image = release.get("image");
    let (repository, index_digest) = split_digest(image);
    assert_eq!(
        repository,
        format!("{}/leaf/leaf-operator", registry.address())
    );
    // The tag names the same index as the digest.
    let tagged = registry.crane(&["digest", release.get("image_tag")]);
    assert_eq!(tagged.trim(), index_digest, "the tag and the digest differ");

    let index = json(&registry.crane(&["manifest", image]));
    let media_type = index["mediaType"].as_str().unwrap_or_default();
    assert!(
        media_type == "application/vnd.oci.image.index.v1+json"
            || media_type == "application/vnd.docker.distribution.manifest.list.v2+json",
        "{image} is not an index: {index}"
    );
    let manifests = index["manifests"]
        .as_array()
        .expect("an index lists manifests");
    let platforms: BTreeSet<String> = manifests
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64".to_string(), "linux/arm64".to_string()]),
        "the index's platforms: {index}"
    );
    assert_eq!(manifests.len(), 2, "exactly two manifests: {index}");

    for manifest in manifests {
        let arch = manifest["platform"]["architecture"].as_str().unwrap();
        let reference = format!("{repository}@{}", manifest["digest"].as_str().unwrap());
        let config = json(&registry.crane(&["config", &reference]));
        assert_eq!(config["architecture"], arch, "{arch} config: {config}");
        assert_eq!(config["os"], "linux", "{arch} config: {config}");
        assert_eq!(
            config["config"]["User"], "65532:65532",
            "{arch} config: {config}"
        );
        let image_manifest = json(&registry.crane(&["manifest", &reference]));
        let layer_bytes: u64 = image_manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum();
        eprintln!("linux/{arch}: {reference}, compressed layers {layer_bytes} bytes");

        let dir = tempfile::tempdir().unwrap();
        let binary = binary_of(registry, &reference, dir.path());
        let bytes = fs::read(&binary).unwrap();
        let elf = read_elf(&bytes);
        let expected = if arch == "amd64" {
            EM_X86_64
        } else {
            EM_AARCH64
        };
        assert_eq!(
            elf.machine, expected,
            "linux/{arch}'s binary is for ELF machine {}",
            elf.machine
        );
        assert!(
            !elf.interpreter,
            "linux/{arch}'s binary asks for a dynamic loader: not static"
        );
        eprintln!("linux/{arch}: binary {} bytes", bytes.len());
    }
}

#[tokio::test]
async fn release_arm64_binary_runs_under_qemu_user() {
    let release = release().await;
    let registry = release.registry;
    let image = release.get("image");
    let (repository, _) = split_digest(image);
    let index = json(&registry.crane(&["manifest", image]));
    let arm64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap_or_else(|| panic!("no arm64 image in {index}"));
    let reference = format!("{repository}@{}", arm64["digest"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let binary = binary_of(registry, &reference, dir.path());
    // Debian's qemu-user-static (scripts/test.sh installs it): the emulator runs the binary it is
    // given, so no binfmt_misc registration (which this machine kind does not have) is needed.
    let output = Command::new("qemu-aarch64-static")
        .arg(&binary)
        .arg("--version")
        .output()
        .expect("failed to run qemu-aarch64-static (apt-get install qemu-user-static)");
    let stdout = text(&output.stdout);
    eprintln!("qemu-aarch64-static leaf-operator --version: {stdout}");
    assert!(
        output.status.success(),
        "the arm64 binary failed under qemu ({}): {stdout}{}",
        output.status,
        text(&output.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("leaf-operator {}", env!("CARGO_PKG_VERSION")),
        "the arm64 binary's --version"
    );
}

#[tokio::test]
async fn release_chart_pulled_by_digest_renders_the_released_index() {
    let release = release().await;
    let chart = release.get("chart");
    let chart_digest = release.get("chart_digest");
    assert_eq!(
        chart,
        format!(
            "oci://{}/leaf/charts/leaf-operator",
            release.registry.address()
        )
    );
    let helm = tool_bin_dir().expect("the helm binary").join("helm");
    let dir = tempfile::tempdir().unwrap();
    let pulled = Command::new(&helm)
        .args([
            "pull",
            &format!("{chart}@{chart_digest}"),
            "--plain-http",
            "--destination",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let said = expect_success("helm pull by digest", &pulled) + &text(&pulled.stderr);
    assert!(
        said.contains(chart_digest),
        "helm pull did not report the digest {chart_digest}: {said}"
    );
    // Pulled by digest, helm names the archive after it: leaf-operator@sha256-<hex>.tgz.
    let archives: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tgz"))
        .collect();
    assert_eq!(archives.len(), 1, "helm pull wrote {archives:?}");
    let archive = &archives[0];
    let shown = expect_success(
        "helm show chart",
        &Command::new(&helm)
            .args(["show", "chart", archive.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let version = release.get("chart_version");
    assert!(
        shown.lines().any(|l| l == format!("version: {version}")),
        "the pulled chart is not version {version}: {shown}"
    );

    // Nothing set: the packaged chart names the released index by digest.
    let rendered = expect_success(
        "helm template of the pulled chart",
        &Command::new(&helm)
            .args([
                "template",
                "lo",
                archive.to_str().unwrap(),
                "--namespace",
                "lo",
            ])
            .output()
            .unwrap(),
    );
    let objects = documents(&rendered);
    let deployment = one(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(release.get("image")),
        "the pulled chart's image"
    );
}

/// `name` -> version, from Cargo.lock (every package this workspace can build).
fn locked_versions() -> BTreeMap<String, BTreeSet<String>> {
    let lock = fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            versions
                .entry(n)
                .or_default()
                .insert(v.trim_matches('"').to_string());
        }
    }
    versions
}

#[tokio::test]
async fn release_sbom_names_the_operator_and_its_crates_and_is_attached_to_the_index() {
    let release = release().await;
    let registry = release.registry;
    let path = PathBuf::from(release.get("sbom"));
    let raw = fs::read(&path).unwrap_or_else(|e| panic!("no SBOM at {}: {e}", path.display()));
    let sbom = json(&String::from_utf8_lossy(&raw));
    assert_eq!(sbom["bomFormat"], "CycloneDX", "{}", path.display());
    let component = &sbom["metadata"]["component"];
    assert_eq!(
        component["name"], "leaf-operator",
        "metadata.component: {component}"
    );
    assert_eq!(component["version"], env!("CARGO_PKG_VERSION"));

    let components = sbom["components"].as_array().expect("components");
    let locked = locked_versions();
    for crate_name in ["kube", "tokio", "reqwest", "aws-lc-sys"] {
        let listed: Vec<&str> = components
            .iter()
            .filter(|c| c["name"] == crate_name)
            .filter_map(|c| c["version"].as_str())
            .collect();
        assert!(!listed.is_empty(), "the SBOM does not list {crate_name}");
        for version in listed {
            assert!(
                locked.get(crate_name).is_some_and(|v| v.contains(version)),
                "the SBOM lists {crate_name} {version}, Cargo.lock has {:?}",
                locked.get(crate_name)
            );
        }
    }
    // Only what is compiled into the binary: a dev-dependency of the tests is not in the image.
    assert!(
        !components.iter().any(|c| c["name"] == "proptest"),
        "the SBOM lists proptest, a dev-dependency"
    );

    // The artifact in the registry is that very file, with the index as its subject.
    let artifact = json(&registry.crane(&["manifest", release.get("sbom_artifact")]));
    let (_, index_digest) = split_digest(release.get("image"));
    assert_eq!(artifact["subject"]["digest"], index_digest, "{artifact}");
    assert_eq!(artifact["artifactType"], "application/vnd.cyclonedx+json");
    let layer_digest = artifact["layers"][0]["digest"].as_str().unwrap_or_default();
    let file_digest = format!("sha256:{}", sha256_hex(&path));
    assert_eq!(layer_digest, file_digest, "the pushed SBOM is not the file");
    // Found from the index: this registry has no referrers API, so through the referrers tag
    // (OCI distribution 1.1's fallback, sha256-<hex>), the way cosign and oras look.
    let (repository, _) = split_digest(release.get("image"));
    let (_, artifact_digest) = split_digest(release.get("sbom_artifact"));
    let referrers_tag = format!("{repository}:{}", index_digest.replace(':', "-"));
    let referrers = json(&registry.crane(&["manifest", &referrers_tag]));
    assert!(
        referrers["manifests"]
            .as_array()
            .is_some_and(|m| m.iter().any(|d| d["digest"] == artifact_digest)),
        "{referrers_tag} does not list the SBOM {artifact_digest}: {referrers}"
    );
}

fn sha256_hex(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    text(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
