//! Prints the TrimbleConnection CRD as YAML; `crds/trimbleconnections.yaml` is its committed output.

fn main() {
    print!("{}", leaf_operator::crd::crd_yaml());
}
