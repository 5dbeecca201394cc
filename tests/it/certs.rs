//! Certificates made for the TLS tests: CAs, server certificates for `localhost`, client
//! certificates with a name, all in PEM, written to a temporary directory when a server needs
//! them as files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The name every server certificate is for; clients connect to 127.0.0.1 and verify it.
pub const SERVER_NAME: &str = "localhost";

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for [`SERVER_NAME`] and 127.0.0.1.
    pub fn server(&self) -> Pair {
        self.sign(
            CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()])
                .expect("server params"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate that expired in 2001.
    pub fn expired_server(&self) -> Pair {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.sign(params, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose CN (and only name) is `name`.
    pub fn client(&self, name: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        self.sign(params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(&self, mut params: CertificateParams, usage: ExtendedKeyUsagePurpose) -> Pair {
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        Pair {
            cert: certificate.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Files a server reads: its certificate and key, and a client CA.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl TlsFiles {
    pub fn write(dir: &Path, server: &Pair) -> Self {
        let files = Self {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: dir.join("client-ca.crt"),
        };
        files.replace(server);
        files
    }

    /// Replaces the certificate and key in place, as cert-manager does: each file written to a
    /// temporary name and renamed over the old one.
    pub fn replace(&self, server: &Pair) {
        write_atomically(&self.key, &server.key);
        write_atomically(&self.cert, &server.cert);
    }

    /// The flags of `spool serve` for these files; with `mtls`, the client CA too.
    pub fn args(&self, mtls: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_string(),
            self.cert.display().to_string(),
            "--tls-key".to_string(),
            self.key.display().to_string(),
        ];
        if mtls {
            args.push("--tls-client-ca".into());
            args.push(self.client_ca.display().to_string());
        }
        args
    }
}

pub fn write_atomically(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}
