//! The settings of `spool serve`, from a TOML file, the environment and flags, in that order of
//! precedence (a flag wins over its environment variable, which wins over the file).
//!
//! clap reads the flags and environment variables; every one of them is optional there, so a
//! value from the file is replaced only by a flag or variable actually given. Built-in defaults
//! fill what none of the three sets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::DEFAULT_MAX_QUEUES;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATA_DIR: &str = "./spool-data";
pub const DEFAULT_LOG: &str = "info";
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 10;
/// 64 MiB: about 200,000 bodies of 256 bytes waiting for their first receive.
pub const DEFAULT_BODY_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Concurrent HTTP/2 streams a client connection may open (each long poll holds one).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1_024;
/// HTTP/2 pings to idle connections, so dead peers (and their long polls) are noticed.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL_SECONDS: u64 = 30;
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_SECONDS: u64 = 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Flags of `spool serve`. Each also reads the environment variable named beside it, and each
/// may be set in the `--config` file under the same name with underscores (`max_queues = 100`).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML configuration file; flags and environment variables override its values.
    #[arg(long, env = "SPOOL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to serve the gRPC API on; 0.0.0.0:50051 accepts other hosts
    /// [default: 127.0.0.1:50051].
    #[arg(long, env = "SPOOL_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address to serve Prometheus metrics on, at /metrics (e.g. 0.0.0.0:9090)
    /// [default: no metrics endpoint].
    #[arg(long, env = "SPOOL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Directory of the embedded database; created if missing. Only one server may use it
    /// [default: ./spool-data].
    #[arg(long, env = "SPOOL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Most queues the server holds; creating more fails with RESOURCE_EXHAUSTED
    /// [default: 10000].
    #[arg(long, env = "SPOOL_MAX_QUEUES")]
    pub max_queues: Option<usize>,

    /// Largest size of the database file, in bytes. Beyond it, sends fail with UNAVAILABLE as
    /// on a full disk; receives and deletes go on [default: as large as the disk allows].
    #[arg(long, env = "SPOOL_MAX_DATABASE_BYTES")]
    pub max_database_bytes: Option<u64>,

    /// Memory, in bytes, for the bodies of messages not received yet, shared by all queues: a
    /// message's first receive then reads no storage. Bodies beyond it are read from storage;
    /// 0 turns the cache off [default: 67108864 (64 MiB)].
    #[arg(long, env = "SPOOL_BODY_CACHE_BYTES")]
    pub body_cache_bytes: Option<usize>,

    /// Log filter, in tracing's EnvFilter syntax, e.g. "info" or "spool=debug,info"
    /// [default: info].
    #[arg(long, env = "SPOOL_LOG")]
    pub log: Option<String>,

    /// Log format [default: human].
    #[arg(long, env = "SPOOL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Concurrent HTTP/2 streams per client connection; each open long poll holds one
    /// [default: 1024].
    #[arg(long, env = "SPOOL_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,

    /// Seconds between HTTP/2 keepalive pings to a connection; 0 turns them off [default: 30].
    #[arg(long, env = "SPOOL_HTTP2_KEEPALIVE_INTERVAL_SECONDS")]
    pub http2_keepalive_interval_seconds: Option<u64>,

    /// Seconds to wait for a keepalive ping's answer before closing the connection
    /// [default: 10].
    #[arg(long, env = "SPOOL_HTTP2_KEEPALIVE_TIMEOUT_SECONDS")]
    pub http2_keepalive_timeout_seconds: Option<u64>,

    /// Seconds after which a client connection is closed gracefully, so clients reconnect and
    /// spread over replicas behind an L4 load balancer; 0 keeps connections [default: 0].
    #[arg(long, env = "SPOOL_MAX_CONNECTION_AGE_SECONDS")]
    pub max_connection_age_seconds: Option<u64>,

    /// Seconds that shutdown (SIGTERM, SIGINT) waits for open calls before closing them
    /// [default: 10].
    #[arg(long, env = "SPOOL_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
}

/// The config file: the same settings as the flags, all optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    max_queues: Option<usize>,
    max_database_bytes: Option<u64>,
    body_cache_bytes: Option<usize>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    max_concurrent_streams: Option<u32>,
    http2_keepalive_interval_seconds: Option<u64>,
    http2_keepalive_timeout_seconds: Option<u64>,
    max_connection_age_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
}

/// The effective settings of a server: every value decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub max_queues: usize,
    pub max_database_bytes: Option<u64>,
    pub body_cache_bytes: usize,
    pub log: String,
    pub log_format: LogFormat,
    pub max_concurrent_streams: u32,
    pub http2_keepalive_interval_seconds: u64,
    pub http2_keepalive_timeout_seconds: u64,
    pub max_connection_age_seconds: u64,
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Merges the config file named by `args` (if any) under `args`, then the defaults.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = match args.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("default listen address: {e}")))?,
        };
        let settings = Self {
            listen,
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            max_queues: args
                .max_queues
                .or(file.max_queues)
                .unwrap_or(DEFAULT_MAX_QUEUES),
            max_database_bytes: args.max_database_bytes.or(file.max_database_bytes),
            body_cache_bytes: args
                .body_cache_bytes
                .or(file.body_cache_bytes)
                .unwrap_or(DEFAULT_BODY_CACHE_BYTES),
            log: args
                .log
                .or(file.log)
                .unwrap_or_else(|| DEFAULT_LOG.to_string()),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            max_concurrent_streams: args
                .max_concurrent_streams
                .or(file.max_concurrent_streams)
                .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS),
            http2_keepalive_interval_seconds: args
                .http2_keepalive_interval_seconds
                .or(file.http2_keepalive_interval_seconds)
                .unwrap_or(DEFAULT_HTTP2_KEEPALIVE_INTERVAL_SECONDS),
            http2_keepalive_timeout_seconds: args
                .http2_keepalive_timeout_seconds
                .or(file.http2_keepalive_timeout_seconds)
                .unwrap_or(DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_SECONDS),
            max_connection_age_seconds: args
                .max_connection_age_seconds
                .or(file.max_connection_age_seconds)
                .unwrap_or(0),
            shutdown_grace_seconds: args
                .shutdown_grace_seconds
                .or(file.shutdown_grace_seconds)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_queues == 0 {
            return Err(ConfigError::Invalid(
                "max_queues is 0; it must be at least 1".into(),
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_streams is 0; it must be at least 1".into(),
            ));
        }
        if self.http2_keepalive_interval_seconds > 0 && self.http2_keepalive_timeout_seconds == 0 {
            return Err(ConfigError::Invalid(
                "http2_keepalive_timeout_seconds is 0; it must be at least 1 while keepalive pings are on"
                    .into(),
            ));
        }
        Ok(())
    }

    fn seconds(value: u64) -> Option<Duration> {
        (value > 0).then(|| Duration::from_secs(value))
    }

    pub fn http2_keepalive_interval(&self) -> Option<Duration> {
        Self::seconds(self.http2_keepalive_interval_seconds)
    }

    pub fn http2_keepalive_timeout(&self) -> Option<Duration> {
        Self::seconds(self.http2_keepalive_timeout_seconds)
    }

    pub fn max_connection_age(&self) -> Option<Duration> {
        Self::seconds(self.max_connection_age_seconds)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// Parts of a setting's name that mark its value as secret: the startup log shows
/// [`REDACTED`] instead. None of today's settings is secret; a credential added later (a
/// PostgreSQL password, a token file's contents) is masked by its name alone.
pub const SECRET_NAME_PARTS: &[&str] = &["password", "secret", "token", "credential"];

/// What the startup log shows for a secret setting.
pub const REDACTED: &str = "<redacted>";

impl Settings {
    /// The settings as one JSON object (keys in name order), secrets redacted: the startup
    /// log's JSON form. Fails only for a value JSON cannot hold (a data_dir that is not UTF-8).
    pub fn to_redacted_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self).map(redact)
    }

    /// The settings as `key = value` lines (TOML's syntax, so a line can be pasted into a
    /// config file), secrets redacted: the startup log's human form. An unset optional setting
    /// reads `key = (not set)`.
    pub fn to_redacted_lines(&self) -> Result<Vec<String>, serde_json::Error> {
        let serde_json::Value::Object(entries) = self.to_redacted_json()? else {
            // Settings is a struct, which serde_json always renders as an object.
            return Ok(Vec::new());
        };
        Ok(entries
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::Null => format!("{key} = (not set)"),
                value => format!("{key} = {value}"),
            })
            .collect())
    }
}

/// Replaces the value of every key (at any depth) whose name contains a [`SECRET_NAME_PARTS`]
/// entry with [`REDACTED`].
fn redact(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(entries) => entries
            .into_iter()
            .map(|(key, value)| {
                let lower = key.to_ascii_lowercase();
                let value = if SECRET_NAME_PARTS.iter().any(|part| lower.contains(part)) {
                    serde_json::Value::String(REDACTED.into())
                } else {
                    redact(value)
                };
                (key, value)
            })
            .collect(),
        serde_json::Value::Array(items) => items.into_iter().map(redact).collect(),
        other => other,
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let settings = Settings::resolve(ServeArgs::default()).expect("defaults");
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(settings.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(settings.max_queues, DEFAULT_MAX_QUEUES);
        assert_eq!(settings.metrics_listen, None);
        assert_eq!(settings.log_format, LogFormat::Human);
        assert_eq!(settings.max_connection_age(), None);
    }

    #[test]
    fn arguments_override_the_file() {
        let config = file(
            "listen = \"0.0.0.0:6000\"\nmax_queues = 5\nlog_format = \"json\"\n\
             metrics_listen = \"127.0.0.1:9191\"\nmax_connection_age_seconds = 60\n",
        );
        let settings = Settings::resolve(ServeArgs {
            config: Some(config.path().to_path_buf()),
            max_queues: Some(7),
            ..Default::default()
        })
        .expect("resolve");
        assert_eq!(settings.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(settings.max_queues, 7);
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.metrics_listen.map(|a| a.port()), Some(9191));
        assert_eq!(settings.max_connection_age(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn settings_render_as_lines_and_json_with_secrets_redacted() {
        let settings = Settings::resolve(ServeArgs {
            max_queues: Some(7),
            ..Default::default()
        })
        .expect("resolve");
        let lines = settings.to_redacted_lines().expect("lines");
        assert!(lines.contains(&"max_queues = 7".to_string()), "{lines:?}");
        assert!(
            lines.contains(&format!("listen = \"{DEFAULT_LISTEN}\"")),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"metrics_listen = (not set)".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"log_format = \"human\"".to_string()));
        let json = settings.to_redacted_json().expect("json");
        assert_eq!(json["max_queues"], 7);
        assert_eq!(json["data_dir"], DEFAULT_DATA_DIR);

        let redacted = redact(serde_json::json!({
            "postgres_password": "hunter2",
            "auth": {"API_Token": "abc", "tokens": ["x"], "port": 1},
            "listen": "0.0.0.0:1",
        }));
        assert_eq!(
            redacted,
            serde_json::json!({
                "postgres_password": REDACTED,
                "auth": {"API_Token": REDACTED, "tokens": REDACTED, "port": 1},
                "listen": "0.0.0.0:1",
            })
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let unknown = file("max_queus = 5\n");
        let err = Settings::resolve(ServeArgs {
            config: Some(unknown.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_queus"), "{err}");
        let wrong_type = file("max_queues = \"many\"\n");
        let err = Settings::resolve(ServeArgs {
            config: Some(wrong_type.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_queues"), "{err}");
        let missing = Settings::resolve(ServeArgs {
            config: Some(PathBuf::from("/nonexistent/spool.toml")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/spool.toml"));
        let zero = Settings::resolve(ServeArgs {
            max_queues: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(zero.to_string().contains("max_queues"));
    }
}
