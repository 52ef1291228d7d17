//! Prints the TrimbleConnection CRD as YAML, or with `--write` writes it to every committed copy.
//!
//! `crds/trimbleconnections.yaml` is the source the chart and the kustomize base copy; tests fail
//! when any copy differs from what the Rust types generate. Run `cargo run --bin crdgen -- --write`
//! after changing `src/crd.rs`.

use std::path::Path;

/// Every place the generated CRD is committed, relative to the repository root.
const CRD_COPIES: &[&str] = &[
    "crds/trimbleconnections.yaml",
    "charts/leaf-operator/files/crds/trimbleconnections.yaml",
    "deploy/crds/trimbleconnections.yaml",
];

fn main() {
    let yaml = leaf_operator::crd::crd_yaml();
    if std::env::args().nth(1).as_deref() != Some("--write") {
        print!("{yaml}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for copy in CRD_COPIES {
        let path = root.join(copy);
        std::fs::write(&path, &yaml)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        println!("wrote {copy}");
    }
}
