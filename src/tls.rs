//! gRPC over TLS (rustls, ring), with certificates reloaded in place and optional client
//! certificates (mTLS).
//!
//! Spool accepts TCP connections itself (`net::incoming`) and runs each TLS handshake with the server config in
//! force at that moment: a reload (see `reload`) swaps the config, so new handshakes present
//! the new certificate while open connections keep the session they have. The handshaken
//! streams go to tonic, whose `TlsConnectInfo` hands the client's certificate to the auth
//! layer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// The first byte of a TLS record carrying a handshake: every TLS client's first byte.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files to read and watch, in the order [`server_config`] takes their contents.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }
}

/// A rustls server config from the contents of [`TlsFiles::paths`]: the certificate chain,
/// the private key, and the client CA's certificates when there is one.
pub fn server_config(files: &TlsFiles, contents: &[Vec<u8>]) -> Result<ServerConfig, String> {
    let [cert, key, rest @ ..] = contents else {
        return Err("the certificate and key files were not read".into());
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: not PEM certificates: {error}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block in it",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|error| format!("{}: no PEM private key: {error}", files.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS protocol versions: {error}"))?;
    let builder = match (rest.first(), &files.client_ca) {
        (Some(ca), Some(ca_path)) => {
            builder.with_client_cert_verifier(client_verifier(ca, ca_path, provider)?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        format!(
            "{} and {} do not make a certificate and its key: {error}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    // gRPC is HTTP/2 only, and clients such as grpc-core insist that ALPN says so: h2 first
    // (rustls picks the first of ours the client offers). HTTP/1.1 too, for browsers and
    // tools that speak only it to the console and gRPC-Web (src/web).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Requires a client certificate that chains to one of the CA file's certificates.
fn client_verifier(
    ca: &[u8],
    ca_path: &std::path::Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca) {
        let certificate = certificate
            .map_err(|error| format!("{}: not PEM certificates: {error}", ca_path.display()))?;
        roots
            .add(certificate)
            .map_err(|error| format!("{}: not a usable CA: {error}", ca_path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CERTIFICATE block in it", ca_path.display()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| format!("{}: {error}", ca_path.display()))
}

/// The server config in force; [`TlsConfigs::replace`] is a reload.
#[derive(Debug)]
pub struct TlsConfigs {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsConfigs {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            current: RwLock::new(Arc::new(config)),
        }
    }

    pub fn replace(&self, config: ServerConfig) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    fn acceptor(&self) -> TlsAcceptor {
        // A poisoned lock means a panic while swapping an Arc: the Arc inside is whole.
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Runs the TLS handshake of a new connection with the config in force now (the accept loop,
/// `net::incoming`, bounds its time); `None` when it fails.
pub fn handshake(
    configs: &TlsConfigs,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl std::future::Future<Output = Option<TlsStream<TcpStream>>> + Send + use<> {
    run_handshake(configs.acceptor(), stream, peer)
}

/// Runs one handshake; a failure is logged (it is the client's, so at INFO) and closes the
/// connection.
async fn run_handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] != TLS_HANDSHAKE_RECORD => {
            tracing::info!(
                %peer,
                "refused a connection that does not speak TLS (a plaintext client: it must use an \
                 https:// endpoint)"
            );
            return None;
        }
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(%peer, %error, "connection closed before its TLS handshake");
            return None;
        }
    }
    match acceptor.accept(stream).await {
        Ok(tls) => Some(tls),
        Err(error) => {
            tracing::info!(%peer, %error, "TLS handshake failed");
            None
        }
    }
}
