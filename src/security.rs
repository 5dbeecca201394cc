//! What the settings say about transport security and authentication, loaded at startup and
//! kept current: the TLS server config (`--tls-cert`, `--tls-key`, `--tls-client-ca`) and the
//! principals (`--auth-file`), each re-read when its files change (see `reload`).
//!
//! At startup a file that cannot be read or is not valid stops the server, naming the file; on
//! a reload it is logged and counted, and what was in force stays.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Principals};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::reload::{read_all, watch_files};
use crate::tls::{TlsConfigs, TlsFiles, server_config};

/// The auth file in force, with what it was read from.
pub struct Auth {
    pub authenticator: Arc<Authenticator>,
    path: PathBuf,
    loaded: Vec<Vec<u8>>,
}

/// The TLS config in force, with what it was built from.
pub struct Tls {
    pub configs: Arc<TlsConfigs>,
    files: TlsFiles,
    loaded: Vec<Vec<u8>>,
}

/// Everything the settings ask for; `None` parts are off.
pub struct Security {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

impl Security {
    /// Reads the files the settings name; the error names what is wrong, and where.
    pub fn load(settings: &Settings) -> Result<Self, String> {
        let auth = match &settings.auth_file {
            None => None,
            Some(path) => {
                let loaded = read_all(std::slice::from_ref(path))?;
                let principals = parse_auth_file(path, &loaded)?;
                tracing::info!(
                    auth_file = %path.display(),
                    principals = principals.len(),
                    "authentication on: calls need a principal's bearer token or client certificate"
                );
                Some(Auth {
                    authenticator: Arc::new(Authenticator::new(principals)),
                    path: path.clone(),
                    loaded,
                })
            }
        };
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: settings.tls_client_ca.clone(),
                };
                let loaded = read_all(&files.paths())?;
                let config = server_config(&files, &loaded)?;
                tracing::info!(
                    cert = %files.cert.display(),
                    client_ca = %files.client_ca.as_ref().map(|ca| ca.display().to_string()).unwrap_or_default(),
                    "TLS on{}",
                    if files.client_ca.is_some() { ", client certificates required" } else { "" }
                );
                Some(Tls {
                    configs: Arc::new(TlsConfigs::new(config)),
                    files,
                    loaded,
                })
            }
            // Settings::resolve refuses one without the other.
            _ => None,
        };
        Ok(Self { auth, tls })
    }

    /// The principals in force, for the auth layer; `None` without an auth file.
    pub fn authenticator(&self) -> Option<Arc<Authenticator>> {
        self.auth.as_ref().map(|auth| auth.authenticator.clone())
    }

    /// Watches the files for changes until `stop`, each set in a task of its own.
    pub fn watch(&self, stop: &CancellationToken, metrics: &Arc<Metrics>) {
        if let Some(auth) = &self.auth {
            let authenticator = auth.authenticator.clone();
            let path = auth.path.clone();
            let failures = metrics.clone();
            tokio::spawn(watch_files(
                "auth file",
                vec![auth.path.clone()],
                auth.loaded.clone(),
                stop.clone(),
                move |contents| {
                    let principals = parse_auth_file(&path, contents)?;
                    let count = principals.len();
                    authenticator.replace(principals);
                    Ok(format!("{} with {count} principals", path.display()))
                },
                move || failures.reload_failed("auth"),
            ));
        }
        if let Some(tls) = &self.tls {
            let configs = tls.configs.clone();
            let files = tls.files.clone();
            let failures = metrics.clone();
            tokio::spawn(watch_files(
                "TLS certificate",
                tls.files.paths(),
                tls.loaded.clone(),
                stop.clone(),
                move |contents| {
                    configs.replace(server_config(&files, contents)?);
                    Ok(format!(
                        "{}; new connections present it",
                        files.cert.display()
                    ))
                },
                move || failures.reload_failed("tls"),
            ));
        }
    }
}

fn parse_auth_file(path: &std::path::Path, contents: &[Vec<u8>]) -> Result<Principals, String> {
    let bytes = contents.first().map(Vec::as_slice).unwrap_or_default();
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("auth file {}: not UTF-8 text", path.display()))?;
    Principals::parse(text).map_err(|error| format!("auth file {}: {error}", path.display()))
}
