//! Key material for a test control plane: a CA, the API server's serving certificate and the
//! ServiceAccount signing key pair, made with the `openssl` command line tool.
//!
//! An own CA (rather than kube-apiserver's self-signed `--cert-dir`) gives clients one stable CA
//! file that is ready before the server starts, and a serving certificate rustls accepts
//! (an end-entity certificate with `subjectAltName` 127.0.0.1 and localhost).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths of the generated files, all inside the run directory.
#[derive(Clone, Debug)]
pub struct Certs {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!(
                "failed to run `openssl` ({e}); the test control plane needs it to make its \
                 certificates: install it (e.g. `apt-get install openssl`)"
            )
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`openssl {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Generates everything under `dir/pki` (EC P-256 keys: instant to make).
pub fn generate(dir: &Path) -> Result<Certs, String> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)
        .map_err(|e| format!("failed to create {}: {e}", pki.display()))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];

    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "3650"]);
    ca.extend(["-subj", "/CN=leaf-operator-test-ca"]);
    openssl(&pki, &ca)?;

    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
    ]);
    openssl(&pki, &csr)?;
    // Exactly these extensions: rustls rejects a CA certificate used as a server certificate.
    let extensions = "basicConstraints=critical,CA:FALSE\n\
                      keyUsage=critical,digitalSignature,keyEncipherment\n\
                      extendedKeyUsage=serverAuth\n\
                      subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n";
    // Pods of the test node (tests/support/node) reach the API server through the `kubernetes`
    // Service (10.0.0.1, the first address of --service-cluster-ip-range) and at the node
    // bridge's address it binds to there.
    let extensions = extensions.replace(
        "DNS:localhost,",
        &format!(
            "DNS:localhost,IP:10.0.0.1,IP:{},",
            super::node::NODE_ADDRESS
        ),
    );
    std::fs::write(pki.join("apiserver.ext"), &extensions)
        .map_err(|e| format!("failed to write apiserver.ext: {e}"))?;
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "apiserver.crt",
            "-days",
            "3650",
            "-extfile",
            "apiserver.ext",
        ],
    )?;

    openssl(
        &pki,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(&pki, &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;

    Ok(Certs {
        ca_cert: pki.join("ca.crt"),
        serving_cert: pki.join("apiserver.crt"),
        serving_key: pki.join("apiserver.key"),
        service_account_key: pki.join("sa.key"),
        service_account_pub: pki.join("sa.pub"),
    })
}
