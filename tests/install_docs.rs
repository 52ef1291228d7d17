//! Files that must stay in step with the code: the CRD's copies in the chart and the kustomize
//! base, the reasons in docs/troubleshooting.md, the flags in docs/configuration.md, and every
//! operator setting exposed by the chart and the kustomize base, and the docs section the chart
//! names when no image is set.

mod support;

use support::install::{read, repo};

#[test]
fn chart_and_kustomize_crd_copies_match_the_generated_crd() {
    let source = repo("crds/trimbleconnections.yaml");
    let generated = read(&source);
    for copy in [
        "charts/leaf-operator/files/crds/trimbleconnections.yaml",
        "deploy/crds/trimbleconnections.yaml",
    ] {
        let copied = read(&repo(copy));
        assert!(
            copied == generated,
            "{copy} differs from crds/trimbleconnections.yaml; regenerate every copy with\n    cargo run --bin crdgen -- --write"
        );
    }
}

#[test]
fn troubleshooting_docs_explain_every_reason() {
    let docs = read(&repo("docs/troubleshooting.md"));
    use leaf_operator::reason::{IntoEnumIterator, Reason};
    let missing: Vec<&str> = Reason::iter()
        .map(|r| r.as_str())
        .filter(|reason| !docs.contains(&format!("`{reason}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not explain reasons {missing:?}"
    );
}

/// Every operator flag: (long flag, environment variable, hidden).
fn operator_flags() -> Vec<(String, Option<String>, bool)> {
    use clap::CommandFactory;
    leaf_operator::config::Config::command()
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if long == "help" || long == "version" {
                return None;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((format!("--{long}"), env, arg.is_hide_set()))
        })
        .collect()
}

#[test]
fn configuration_docs_list_every_flag_and_environment_variable() {
    let docs = read(&repo("docs/configuration.md"));
    let flags = operator_flags();
    assert!(
        flags.len() >= 10,
        "found only {} flags: {flags:?}",
        flags.len()
    );
    let mut missing = Vec::new();
    for (flag, env, _) in &flags {
        if !docs.contains(&format!("`{flag}`")) {
            missing.push(flag.clone());
        }
        if let Some(env) = env
            && !docs.contains(&format!("`{env}`"))
        {
            missing.push(env.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document {missing:?}"
    );
}

#[test]
fn chart_and_kustomize_base_set_every_operator_setting_by_environment() {
    let chart = read(&repo("charts/leaf-operator/templates/deployment.yaml"));
    let kustomize = read(&repo("deploy/deployment.yaml"));
    // The chart gives the default account as a mounted Secret (LEAF_ACCOUNT_DIR, re-read on
    // change); the environment-variable account is the alternative for running outside it.
    let environment_account = ["LEAF_USERNAME", "LEAF_PASSWORD", "LEAF_TOKEN"];
    // The default account is a per-install choice (a Secret), so the base leaves it to overlays.
    // Leaf's Alerts are off by default in both (the chart renders them when enabled).
    let overlay_only = |env: &str| {
        [
            "LEAF_USERNAME",
            "LEAF_PASSWORD",
            "LEAF_TOKEN",
            "LEAF_ACCOUNT_DIR",
        ]
        .contains(&env)
            || env.starts_with("LEAF_ALERTS_")
    };
    let mut missing = Vec::new();
    for (flag, env, hidden) in operator_flags() {
        let Some(env) = env else { continue };
        if hidden {
            continue; // test-only settings
        }
        if !environment_account.contains(&env.as_str()) && !chart.contains(&format!("name: {env}"))
        {
            missing.push(format!("chart: {env} ({flag})"));
        }
        if !overlay_only(&env) && !kustomize.contains(&format!("name: {env}")) {
            missing.push(format!("deploy/: {env} ({flag})"));
        }
    }
    assert!(
        missing.is_empty(),
        "operator settings not exposed: {missing:?}"
    );
}

/// The chart's render failure and NOTES send users to this section: it must exist and give each
/// way's real command.
#[test]
fn install_docs_say_how_to_get_an_image_into_a_cluster() {
    let docs = read(&repo("docs/install.md"));
    let section = docs
        .split("### Getting an image into your cluster\n")
        .nth(1)
        .expect("docs/install.md has no section \"Getting an image into your cluster\"");
    let section = section.split("\n### ").next().unwrap_or_default();
    for command in [
        "scripts/release.sh registry.example.com/platform",
        "helm install leaf-operator oci://registry.example.com/platform/charts/leaf-operator --version",
        "kind load image-archive",
        "kind load docker-image",
        "k3d image import",
        "minikube image load",
        "buildah push \"$image\" docker-archive:",
    ] {
        assert!(
            section.contains(command),
            "docs/install.md's \"Getting an image into your cluster\" lacks `{command}`"
        );
    }
    let helpers = read(&repo("charts/leaf-operator/templates/_helpers.tpl"));
    assert!(
        helpers.contains("Getting an image into your cluster"),
        "the chart's missing-image message no longer names the docs section"
    );
}
