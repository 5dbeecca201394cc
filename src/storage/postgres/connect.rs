//! Connecting to PostgreSQL: the connection string (a libpq URL or key=value pairs), where the
//! password comes from, and TLS with rustls.
//!
//! tokio-postgres parses most of libpq's options itself but knows only `sslmode=disable`,
//! `prefer` and `require`, and no `sslrootcert`; those two are taken out here and turned into a
//! rustls configuration with libpq's meaning:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | disable | no | – |
//! | prefer (default) | if the server offers it | no |
//! | require | yes | no; with `sslrootcert`, against it (as libpq does) |
//! | verify-ca | yes | against `sslrootcert` |
//! | verify-full | yes | against `sslrootcert`, and the host name |

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// How long opening one connection may take (TCP, TLS, authentication) when the connection
/// string sets no `connect_timeout`: an unreachable host must fail the attempt, not hang it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `application_name` when the string sets none, so Spool's sessions are easy to find in
/// `pg_stat_activity` (and to terminate, in tests).
pub const APPLICATION_NAME: &str = "spool";

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// Everything needed to open a connection, parsed once.
#[derive(Clone)]
pub struct ConnectOptions {
    config: Config,
    /// None: plain TCP only (`sslmode=disable`).
    tls: Option<RustlsConnect>,
    /// The target without its password, for log lines and errors.
    described: String,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

impl ConnectOptions {
    /// Parses `conninfo`. The password comes from the string itself, else from
    /// `password_file` (its first line), else from the `PGPASSWORD` environment variable.
    pub fn parse(conninfo: &str, password_file: Option<&Path>) -> Result<Self, ConnectError> {
        let bad = |why: String| ConnectError(format!("--postgres-url is not valid: {why}"));
        let split = split_tls_options(conninfo).map_err(bad)?;
        let mut config: Config = split
            .rest
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        if config.get_password().is_none() {
            if let Some(path) = password_file {
                config.password(read_password_file(path)?);
            } else if let Ok(password) = std::env::var("PGPASSWORD")
                && !password.is_empty()
            {
                config.password(password);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let mode = split.sslmode.as_deref().unwrap_or("prefer");
        let root = split.sslrootcert.as_deref().map(PathBuf::from);
        let check = match (mode, &root) {
            ("disable", _) => None,
            ("prefer" | "allow", None) | ("require", None) => Some(CertificateCheck::None),
            ("prefer" | "allow" | "require" | "verify-ca", Some(root)) => {
                Some(CertificateCheck::Chain(load_roots(root)?))
            }
            ("verify-full", Some(root)) => Some(CertificateCheck::Full(load_roots(root)?)),
            ("verify-ca" | "verify-full", None) => {
                return Err(bad(format!(
                    "sslmode={mode} needs sslrootcert=FILE, the CA certificates (PEM) to \
                     check the server's certificate against"
                )));
            }
            (other, _) => {
                return Err(bad(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        };
        config.ssl_mode(match mode {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let described = describe(&config, mode);
        Ok(Self {
            config,
            tls: check.map(RustlsConnect::new),
            described,
        })
    }

    /// `user@host:port/dbname (sslmode=...)`, never the password.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Opens one connection; its connection task runs on the current runtime until the
    /// returned client is dropped or the connection breaks.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    // A broken connection shows itself to its client (every call fails with a closed-
    // connection error), which is where it is handled; nothing more to say here.
    if let Err(error) = connection.await {
        tracing::debug!(%error, "PostgreSQL connection ended");
    }
}

fn describe(config: &Config, sslmode: &str) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}@{}:{}/{} (sslmode={sslmode})",
        config.get_user().unwrap_or("(default user)"),
        if hosts.is_empty() {
            "localhost".to_string()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".to_string()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or("(default database)"),
    )
}

fn read_password_file(path: &Path) -> Result<String, ConnectError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConnectError(format!(
            "cannot read the PostgreSQL password file {}: {e}",
            path.display()
        ))
    })?;
    // A Kubernetes Secret mounted as a file often ends with a newline that is not part of it.
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The connection string without the TLS options tokio-postgres does not know.
#[derive(Debug, PartialEq, Eq)]
struct SplitOptions {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Options handled here rather than by tokio-postgres.
const TLS_OPTIONS: [&str; 2] = ["sslmode", "sslrootcert"];

fn split_tls_options(conninfo: &str) -> Result<SplitOptions, String> {
    let mut sslmode = None;
    let mut sslrootcert = None;
    let mut take = |key: &str, value: String| match key {
        "sslmode" => sslmode = Some(value),
        _ => sslrootcert = Some(value),
    };
    let rest = if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        match conninfo.split_once('?') {
            None => conninfo.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if TLS_OPTIONS.contains(&key) {
                        take(key, percent_decode(value)?);
                    } else {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in parse_key_values(conninfo)? {
            if TLS_OPTIONS.contains(&key.as_str()) {
                take(&key, value);
            } else {
                kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    Ok(SplitOptions {
        rest,
        sslmode,
        sslrootcert,
    })
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// libpq's `key=value` syntax: pairs separated by whitespace, values optionally in single
/// quotes with backslash escapes.
fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("expected '=' after {key:?}"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value of {key:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `conninfo` with its password, if any, replaced by `replacement`: for logs.
pub fn redact_password(conninfo: &str, replacement: &str) -> String {
    if let Some(scheme_end) = conninfo.find("://") {
        let after = scheme_end + 3;
        let authority_end = conninfo[after..]
            .find(['/', '?'])
            .map_or(conninfo.len(), |i| after + i);
        let mut out = conninfo.to_string();
        // user:password@host: the password is between the first ':' and the last '@'.
        if let Some(at) = conninfo[after..authority_end].rfind('@')
            && let Some(colon) = conninfo[after..after + at].find(':')
        {
            out.replace_range(after + colon + 1..after + at, replacement);
        }
        // ...?password=...
        if let Some((base, query)) = out.clone().split_once('?') {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => format!("password={replacement}"),
                    _ => pair.to_string(),
                })
                .collect();
            out = format!("{base}?{}", query.join("&"));
        }
        out
    } else {
        match parse_key_values(conninfo) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(key, value)| {
                    if key == "password" {
                        format!("{key}={replacement}")
                    } else {
                        format!("{key}={value}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            // Unparsable: it cannot be shown safely at all.
            Err(_) => replacement.to_string(),
        }
    }
}

fn load_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, ConnectError> {
    let bad = |why: String| {
        ConnectError(format!(
            "cannot use sslrootcert {} as CA certificates: {why}",
            path.display()
        ))
    };
    let certificates: Vec<CertificateDer<'static>> = {
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?
    };
    if certificates.is_empty() {
        return Err(bad("the file holds no PEM certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// What the client checks of the server's certificate.
enum CertificateCheck {
    /// Encrypted, but any certificate is accepted (libpq's `require` without a root file).
    None,
    /// Signed by one of these CAs; any host name (`verify-ca`).
    Chain(Arc<rustls::RootCertStore>),
    /// Signed by one of these CAs, for the host connected to (`verify-full`).
    Full(Arc<rustls::RootCertStore>),
}

/// tokio-postgres's TLS hook on rustls (ring as the crypto provider).
#[derive(Clone)]
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl RustlsConnect {
    fn new(check: CertificateCheck) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            CertificateCheck::None => Arc::new(AnyCertificate(provider.clone())),
            CertificateCheck::Chain(roots) => Arc::new(AnyHostName(webpki(roots, &provider))),
            CertificateCheck::Full(roots) => webpki(roots, &provider),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            // ring's default provider supports every default version; this cannot fail.
            .map(|builder| {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            });
        let config = match config {
            Ok(config) => config,
            Err(error) => unreachable!("ring supports rustls's default TLS versions: {error}"),
        };
        Self {
            config: Arc::new(config),
        }
    }
}

fn webpki(
    roots: Arc<rustls::RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Arc<dyn ServerCertVerifier> {
    match rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
    {
        Ok(verifier) => verifier,
        // `load_roots` refuses an empty store, the builder's only error here.
        Err(error) => unreachable!("a non-empty root store makes a verifier: {error}"),
    }
}

/// `sslmode=require` without a root file: the channel is encrypted, the peer not checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyHostName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = TlsStream;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsHandshake> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsHandshake {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

struct RustlsHandshake {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsHandshake {
    type Stream = TlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name, stream).await?;
            Ok(TlsStream(Box::new(stream)))
        })
    }
}

/// A TLS session over a PostgreSQL socket.
pub struct TlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM channel binding would need the certificate's hash by its signature algorithm;
        // without it, `channel_binding=prefer` (the default) authenticates without binding.
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_urls_and_key_values() {
        let split = split_tls_options(
            "postgres://spool:pw@db:5432/spool?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("split");
        assert_eq!(split.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(split.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            split.rest,
            "postgres://spool:pw@db:5432/spool?application_name=x"
        );

        let split = split_tls_options("host=db user=spool sslmode=require password='a b\\'c'")
            .expect("split");
        assert_eq!(split.sslmode.as_deref(), Some("require"));
        assert_eq!(split.sslrootcert, None);
        assert_eq!(split.rest, "host='db' user='spool' password='a b\\'c'");
        let config: Config = split.rest.parse().expect("tokio-postgres reads it back");
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn passwords_are_redacted_in_every_form() {
        assert_eq!(
            redact_password("postgres://spool:s3cr:et@db:5432/spool", "***"),
            "postgres://spool:***@db:5432/spool"
        );
        assert_eq!(
            redact_password("postgresql://db/spool?user=u&password=s3cret", "***"),
            "postgresql://db/spool?user=u&password=***"
        );
        assert_eq!(
            redact_password("postgres://spool@db/spool", "***"),
            "postgres://spool@db/spool"
        );
        assert_eq!(
            redact_password("host=db password='s3 cret' user=u", "***"),
            "host=db password=*** user=u"
        );
        assert_eq!(redact_password("host='unterminated", "***"), "***");
    }

    #[test]
    fn verify_modes_need_a_root_file_and_unknown_modes_are_refused() {
        let err = ConnectOptions::parse("host=db sslmode=verify-full", None).unwrap_err();
        assert!(err.0.contains("sslrootcert"), "{err}");
        let err = ConnectOptions::parse("host=db sslmode=sometimes", None).unwrap_err();
        assert!(err.0.contains("sslmode=sometimes"), "{err}");
        let err =
            ConnectOptions::parse("host=db sslrootcert=/nonexistent/ca.pem", None).unwrap_err();
        assert!(err.0.contains("/nonexistent/ca.pem"), "{err}");
        let options =
            ConnectOptions::parse("postgres://u:pw@db:6543/x?sslmode=disable", None).expect("ok");
        assert_eq!(options.describe(), "u@db:6543/x (sslmode=disable)");
    }
}
