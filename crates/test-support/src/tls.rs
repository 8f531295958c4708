//! Certificates for HTTPS tests, made by the `openssl` command at run time in a temporary
//! folder (no private key is checked in): a certificate authority of its own, and a server
//! certificate it signed for `127.0.0.1` and `localhost`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What `openssl` is given: the certificate authority's and the server's extensions.
const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tributary test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A throwaway certificate authority (named apart from every other) and a server certificate
/// it signed (EC P-256, valid for two days), as PEM files in a folder removed on drop.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    /// The authority's certificate: what a client trusts (`ca_file`).
    pub ca_file: PathBuf,
    /// The server's certificate, for `127.0.0.1` and `localhost` (`tls_cert_file`).
    pub cert_file: PathBuf,
    /// The server's private key, PKCS#8 (`tls_key_file`).
    pub key_file: PathBuf,
    /// The authority's private key: a key that does not match `cert_file`.
    pub ca_key_file: PathBuf,
}

impl TestCa {
    /// Makes a new authority and server certificate; panics if `openssl` fails.
    pub fn new() -> Self {
        let suffix = crate::random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-tls-{suffix}"));
        std::fs::create_dir_all(&dir).expect("creating the certificates' folder");
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CONFIG).expect("writing openssl.cnf");
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(&dir, &format!("req -x509 -config openssl.cnf -extensions ca {ec} -days 2 -subj /CN=tributary-test-ca-{suffix} -keyout ca.key -out ca.pem"));
        openssl(&dir, &format!("req -new -config openssl.cnf {ec} -subj /CN=localhost -keyout server.key -out server.csr"));
        openssl(&dir, "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile openssl.cnf -extensions server -out server.pem");
        Self {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            ca_key_file: dir.join("ca.key"),
            dir,
        }
    }

    /// The authority's certificate in PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_file).expect("reading ca.pem")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `openssl` in `dir` with `args` (split at spaces).
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .expect("running openssl (the tests make their certificates with it)");
    assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
}
