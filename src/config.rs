//! The settings of `spool serve`, from a TOML file, the environment and flags, in that order of
//! precedence (a flag wins over its environment variable, which wins over the file).
//!
//! clap reads the flags and environment variables; every one of them is optional there, so a
//! value from the file is replaced only by a flag or variable actually given. Built-in defaults
//! fill what none of the three sets.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::DEFAULT_MAX_QUEUES;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50051));
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
/// 0: connections are kept as long as the client keeps them.
pub const DEFAULT_MAX_CONNECTION_AGE_SECONDS: u64 = 0;
/// The address the other replicas dial: `address` as given when it has a port, else with the
/// port the server listens on (so `--advertise-address $(POD_IP)` is enough).
pub fn advertised(address: &str, listen_port: u16) -> String {
    let has_port = if let Some(rest) = address.strip_prefix('[') {
        rest.contains("]:")
    } else {
        address.matches(':').count() == 1
    };
    if has_port {
        address.to_string()
    } else if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{listen_port}")
    } else {
        format!("{address}:{listen_port}")
    }
}

/// Cluster mode: a member silent this long is dead (`--member-ttl-seconds`).
pub const DEFAULT_MEMBER_TTL_SECONDS: u64 = 10;
/// The member TTLs cluster mode accepts: a second is shorter than a heartbeat round trip under
/// load; past five minutes a dead replica's queues wait too long.
pub const MEMBER_TTL_SECONDS: std::ops::RangeInclusive<u64> = 2..=300;
/// Longest advertised address (a DNS name is at most 253 bytes, plus the port).
pub const MAX_ADVERTISE_ADDRESS_LEN: usize = 260;
/// The PostgreSQL schema of Spool's tables when --postgres-url is set.
pub const DEFAULT_POSTGRES_SCHEMA: &str = "spool";

// The limits that hold under abuse (docs/security.md, "Limits"): their defaults live beside the
// code that enforces them, in `crate::limits`.
use crate::limits::{
    DEFAULT_HANDSHAKE_TIMEOUT_SECONDS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_RESPONSE_BUFFER_BYTES,
    DEFAULT_MAX_WAITING_RECEIVES, DEFAULT_METRICS_MAX_CONNECTIONS,
    DEFAULT_REQUEST_BODY_TIMEOUT_SECONDS, DEFAULT_STREAM_STALL_TIMEOUT_SECONDS,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// A help text with its default, formatted from the constant so the two cannot disagree.
fn with_default(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// Every setting of `spool serve`: the flags (each also read from the environment variable
/// named beside it), the keys of the `--config` file (the same names with underscores), and
/// what the server runs with. One struct for the three, so a setting is added in one place.
///
/// Every field is optional: `None` means "not set here". [`Settings::resolve`] lays flags and
/// variables over the file; the accessors (`listen()`, `max_queues()`, ...) fill in the
/// defaults, which are the `DEFAULT_*` constants above. The `help` texts are the `--help` of
/// `spool serve`.
#[derive(clap::Args, Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the other settings were read from; not a key of the file itself.
    #[arg(
        long,
        env = "SPOOL_CONFIG",
        help = "TOML configuration file; flags and environment variables override its values"
    )]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    #[arg(long, env = "SPOOL_LISTEN", help = with_default(
        "Address to serve the gRPC API on; 0.0.0.0:50051 accepts other hosts",
        DEFAULT_LISTEN,
    ))]
    pub listen: Option<SocketAddr>,

    #[arg(
        long,
        env = "SPOOL_METRICS_LISTEN",
        help = "Address to serve Prometheus metrics on, at /metrics (e.g. 0.0.0.0:9090) \
                [default: no metrics endpoint]"
    )]
    pub metrics_listen: Option<SocketAddr>,

    #[arg(
        long,
        env = "SPOOL_HTTP_LISTEN",
        help = "Address to serve the wire APIs of other SDKs on, over HTTP/1.1: Amazon SQS's \
                JSON and query protocols, and Tencent CMQ's HTTP API v2 at /v2/index.php \
                (queues and topics; docs/compat.md) [default: not served]"
    )]
    pub http_listen: Option<SocketAddr>,

    #[arg(long, env = "SPOOL_DATA_DIR", help = with_default(
        "Directory of the embedded database; created if missing. Only one server may use it",
        DEFAULT_DATA_DIR,
    ))]
    pub data_dir: Option<PathBuf>,

    #[arg(
        long,
        env = "SPOOL_POSTGRES_URL",
        value_name = "URL",
        help = "Keep the queues in PostgreSQL instead of the embedded database: a libpq URL or \
                key=value string, e.g. postgres://spool@db:5432/spool or \
                \"host=db user=spool sslmode=verify-full sslrootcert=/ca.pem\" (sslmode: \
                disable, prefer, require, verify-ca, verify-full). With it, --data-dir is not \
                used [default: the embedded database in --data-dir]"
    )]
    pub postgres_url: Option<String>,

    #[arg(long, env = "SPOOL_POSTGRES_SCHEMA", help = with_default(
        "PostgreSQL schema of Spool's tables, created on first start; one server per schema, so \
         several deployments can share a database",
        DEFAULT_POSTGRES_SCHEMA,
    ))]
    pub postgres_schema: Option<String>,

    #[arg(
        long,
        env = "SPOOL_POSTGRES_PASSWORD_FILE",
        help = "File whose first line is the PostgreSQL password (e.g. a mounted Kubernetes \
                Secret), used when --postgres-url has none; PGPASSWORD is read last"
    )]
    pub postgres_password_file: Option<PathBuf>,

    #[arg(long, env = "SPOOL_MAX_QUEUES", help = with_default(
        "Most queues the server holds; creating more fails with RESOURCE_EXHAUSTED",
        DEFAULT_MAX_QUEUES,
    ))]
    pub max_queues: Option<usize>,

    #[arg(
        long,
        env = "SPOOL_MAX_DATABASE_BYTES",
        help = "Largest size, in bytes, of Spool's files in --data-dir (the database, its WAL \
                and shm). Beyond it, sends fail with UNAVAILABLE as on a full disk; receives \
                and deletes go on [default: as large as --min-free-disk-bytes allows]"
    )]
    pub max_database_bytes: Option<u64>,

    #[arg(long, env = "SPOOL_BODY_CACHE_BYTES", help = with_default(
        "Memory, in bytes, for the bodies of messages not received yet, shared by all queues: a \
         message's first receive then reads no storage. Bodies beyond it are read from storage; \
         0 turns the cache off",
        DEFAULT_BODY_CACHE_BYTES,
    ))]
    pub body_cache_bytes: Option<usize>,

    #[arg(long, env = "SPOOL_QUEUE_WINDOW", help = with_default(
        "Visible messages one queue keeps in memory: the next ones in delivery order. A backlog \
         beyond it stays in storage only and is read in slices as the window drains, so memory \
         does not grow with the backlog (in-flight, delayed and rewindable messages are all \
         held). At least 1",
        crate::queue::window::DEFAULT_QUEUE_WINDOW,
    ))]
    pub queue_window: Option<usize>,

    #[arg(long, env = "SPOOL_TOTAL_WINDOW", help = with_default(
        "Visible messages all queues keep in memory together (see --queue-window): once \
         reached, new messages of every queue stay in storage, and a queue with none in memory \
         reads at most 64 at a time. At least 1",
        crate::queue::window::DEFAULT_TOTAL_WINDOW,
    ))]
    pub total_window: Option<usize>,

    #[arg(long, env = "SPOOL_LOG", help = with_default(
        "Log filter, in tracing's EnvFilter syntax, e.g. \"info\" or \"spool=debug,info\"",
        DEFAULT_LOG,
    ))]
    pub log: Option<String>,

    #[arg(
        long,
        env = "SPOOL_LOG_FORMAT",
        value_enum,
        help = "Log format [default: human]"
    )]
    pub log_format: Option<LogFormat>,

    #[arg(long, env = "SPOOL_MAX_CONCURRENT_STREAMS", help = with_default(
        "Concurrent HTTP/2 streams per client connection; each open long poll holds one",
        DEFAULT_MAX_CONCURRENT_STREAMS,
    ))]
    pub max_concurrent_streams: Option<u32>,

    #[arg(long, env = "SPOOL_HTTP2_KEEPALIVE_INTERVAL_SECONDS", help = with_default(
        "Seconds between HTTP/2 keepalive pings to a connection; 0 turns them off",
        DEFAULT_HTTP2_KEEPALIVE_INTERVAL_SECONDS,
    ))]
    pub http2_keepalive_interval_seconds: Option<u64>,

    #[arg(long, env = "SPOOL_HTTP2_KEEPALIVE_TIMEOUT_SECONDS", help = with_default(
        "Seconds to wait for a keepalive ping's answer before closing the connection",
        DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_SECONDS,
    ))]
    pub http2_keepalive_timeout_seconds: Option<u64>,

    #[arg(long, env = "SPOOL_MAX_CONNECTION_AGE_SECONDS", help = with_default(
        "Seconds after which a client connection is closed gracefully, so clients reconnect and \
         spread over replicas behind an L4 load balancer; 0 keeps connections",
        DEFAULT_MAX_CONNECTION_AGE_SECONDS,
    ))]
    pub max_connection_age_seconds: Option<u64>,

    #[arg(long, env = "SPOOL_SHUTDOWN_GRACE_SECONDS", help = with_default(
        "Seconds that shutdown (SIGTERM, SIGINT) waits for open calls before closing them",
        DEFAULT_SHUTDOWN_GRACE_SECONDS,
    ))]
    pub shutdown_grace_seconds: Option<u64>,

    // ---- transport security and authentication (docs/security.md) ----
    #[arg(
        long,
        env = "SPOOL_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        help = "PEM certificate chain to serve gRPC over TLS with (with --tls-key); re-read when \
                it changes on disk [default: plaintext]"
    )]
    pub tls_cert: Option<PathBuf>,

    #[arg(
        long,
        env = "SPOOL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        help = "PEM private key of --tls-cert; re-read when it changes on disk"
    )]
    pub tls_key: Option<PathBuf>,

    #[arg(
        long,
        env = "SPOOL_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert",
        help = "PEM CA certificates: clients must present a certificate signed by one (mTLS); \
                its DNS name or CN can name a principal of --auth-file [default: no client \
                certificates]"
    )]
    pub tls_client_ca: Option<PathBuf>,

    #[arg(
        long,
        env = "SPOOL_AUTH_FILE",
        value_name = "FILE",
        help = "TOML file of principals (bearer-token hashes, client-certificate names) and their \
                grants; re-read when it changes on disk. Without it every caller may do \
                everything [default: none]"
    )]
    pub auth_file: Option<PathBuf>,

    #[arg(
        long,
        env = "SPOOL_ALLOW_UNAUTHENTICATED",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        help = "Serve without --auth-file on an address other hosts can reach (refused \
                otherwise: anyone there could read, send and delete in every queue) \
                [default: false]"
    )]
    pub allow_unauthenticated: Option<bool>,

    // ---- browsers (src/web; docs/console.md) ----
    #[arg(
        long,
        env = "SPOOL_CORS_ALLOWED_ORIGINS",
        value_name = "ORIGIN,...",
        value_delimiter = ',',
        help = "Web origins (scheme://host[:port], or *) whose pages may call the API with \
                gRPC-Web, besides the console's own; calls from other origins get 403 \
                [default: none]"
    )]
    pub cors_allowed_origins: Option<Vec<String>>,

    #[arg(
        long,
        env = "SPOOL_CONSOLE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        help = "Serve the web console at /console/ on the gRPC port; its calls need the same \
                credentials as any other [default: true]"
    )]
    pub console: Option<bool>,

    // ---- traces (src/otel; README, "Traces") ----
    #[arg(
        long,
        env = "SPOOL_OTLP_ENDPOINT",
        value_name = "URL",
        help = "OpenTelemetry collector to send a span per API call to, as OTLP/HTTP with JSON: \
                http://host[:port][/path] (spans go to <path>/v1/traces). Calls carrying a W3C \
                traceparent join the caller's trace [default: no traces]"
    )]
    pub otlp_endpoint: Option<String>,

    // ---- limits that hold under abuse (docs/security.md, "Limits") ----
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS", help = with_default(
        "Most client connections open at once (plaintext and TLS); more are closed as soon as \
         they are accepted, not queued. Keep it below the open-files limit (ulimit -n)",
        DEFAULT_MAX_CONNECTIONS,
    ))]
    pub max_connections: Option<usize>,

    #[arg(long, env = "SPOOL_HANDSHAKE_TIMEOUT_SECONDS", help = with_default(
        "Seconds a new connection has to finish its TLS handshake and send the HTTP/2 preface \
         (or as many bytes of an HTTP/1.1 request); \
         one that does not is closed",
        DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
    ))]
    pub handshake_timeout_seconds: Option<u64>,

    #[arg(long, env = "SPOOL_REQUEST_BODY_TIMEOUT_SECONDS", help = with_default(
        "Seconds a call has to send its whole request (a consumer stream, StreamMessages: each \
         of its requests); a slower one fails (DEADLINE_EXCEEDED) and frees what it held",
        DEFAULT_REQUEST_BODY_TIMEOUT_SECONDS,
    ))]
    pub request_body_timeout_seconds: Option<u64>,

    #[arg(long, env = "SPOOL_STREAM_STALL_TIMEOUT_SECONDS", help = with_default(
        "Seconds a ReceiveMessages stream may wait on a client that reads nothing (its HTTP/2 \
         window full) before it is ended and the messages not yet handed out are released",
        DEFAULT_STREAM_STALL_TIMEOUT_SECONDS,
    ))]
    pub stream_stall_timeout_seconds: Option<u64>,

    #[arg(long, env = "SPOOL_MAX_RESPONSE_BUFFER_BYTES", help = with_default(
        "Bytes of received messages handed to the network and not yet taken by their clients, \
         in all; beyond it receives wait for room, then fail with RESOURCE_EXHAUSTED",
        DEFAULT_MAX_RESPONSE_BUFFER_BYTES,
    ))]
    pub max_response_buffer_bytes: Option<usize>,

    #[arg(long, env = "SPOOL_MAX_WAITING_RECEIVES", help = with_default(
        "Most ReceiveMessages calls open at once (parked long polls and streams), in all; more \
         fail with RESOURCE_EXHAUSTED",
        DEFAULT_MAX_WAITING_RECEIVES,
    ))]
    pub max_waiting_receives: Option<usize>,

    #[arg(
        long,
        env = "SPOOL_MIN_FREE_DISK_BYTES",
        help = "Sends fail with UNAVAILABLE (as on a full disk) while the filesystem of \
                --data-dir has less free space than this; 0 turns the check off. Not used with \
                --postgres-url (PostgreSQL's disk is the database's) [default: the smaller of \
                1 GiB and 5% of the filesystem]"
    )]
    pub min_free_disk_bytes: Option<u64>,

    #[arg(long, env = "SPOOL_METRICS_MAX_CONNECTIONS", help = with_default(
        "Most connections to the metrics endpoint at once; more are closed at once",
        DEFAULT_METRICS_MAX_CONNECTIONS,
    ))]
    pub metrics_max_connections: Option<usize>,

    #[arg(
        long,
        env = "SPOOL_ADVERTISE_ADDRESS",
        value_name = "HOST[:PORT]",
        help = "Cluster mode: run as one of several replicas sharing --postgres-url, reachable \
                by the others at this address (in Kubernetes, the pod IP; the port defaults to \
                the one --listen binds). \
                Each queue is owned by one replica; any replica accepts every call and forwards \
                it to the owner [default: a single server, alone on its schema]"
    )]
    pub advertise_address: Option<String>,

    #[arg(long, env = "SPOOL_MEMBER_TTL_SECONDS", help = with_default(
        "Cluster mode: a replica whose heartbeat is older than this is dead, and its queues are \
         taken over by the others; a replica that cannot reach PostgreSQL this long stops \
         serving its queues",
        DEFAULT_MEMBER_TTL_SECONDS,
    ))]
    pub member_ttl_seconds: Option<u64>,
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

/// `$over.field.or($under.field)` for every listed field.
macro_rules! layer {
    ($over:expr, $under:expr; $($field:ident),* $(,)?) => {
        Settings {
            config: $over.config,
            $($field: $over.$field.or($under.$field),)*
        }
    };
}

impl Settings {
    /// Lays these settings (from flags and environment variables) over the config file they
    /// name, if any, and checks the result.
    pub fn resolve(self) -> Result<Self, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        let settings = layer!(self, file;
            listen, metrics_listen, http_listen, data_dir, postgres_url, postgres_schema,
            postgres_password_file, max_queues, max_database_bytes, body_cache_bytes,
            queue_window, total_window, log, log_format, max_concurrent_streams, http2_keepalive_interval_seconds,
            http2_keepalive_timeout_seconds, max_connection_age_seconds, shutdown_grace_seconds,
            tls_cert, tls_key, tls_client_ca, auth_file, allow_unauthenticated,
            max_connections, handshake_timeout_seconds, request_body_timeout_seconds,
            stream_stall_timeout_seconds, max_response_buffer_bytes, max_waiting_receives,
            min_free_disk_bytes, metrics_max_connections, cors_allowed_origins, console,
            otlp_endpoint, advertise_address, member_ttl_seconds,
        );
        settings.validate()?;
        Ok(settings)
    }

    /// A config file's text, parsed and checked as `resolve` checks a file with no flags over
    /// it (the fuzz target of config files reads them this way).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let settings: Settings = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings for a server on `data_dir`, everything else at its default (tests, embedding).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: Some(data_dir.into()),
            ..Self::default()
        }
    }

    /// Every setting that has a default, filled in: what the server runs with.
    pub fn effective(&self) -> Self {
        Self {
            config: self.config.clone(),
            listen: Some(self.listen()),
            metrics_listen: self.metrics_listen,
            http_listen: self.http_listen,
            data_dir: Some(self.data_dir()),
            postgres_url: self.postgres_url.clone(),
            postgres_schema: self.postgres_url.is_some().then(|| self.postgres_schema()),
            postgres_password_file: self.postgres_password_file.clone(),
            max_queues: Some(self.max_queues()),
            max_database_bytes: self.max_database_bytes,
            body_cache_bytes: Some(self.body_cache_bytes()),
            queue_window: Some(self.queue_window()),
            total_window: Some(self.total_window()),
            log: Some(self.log()),
            log_format: Some(self.log_format()),
            max_concurrent_streams: Some(self.max_concurrent_streams()),
            http2_keepalive_interval_seconds: Some(
                self.http2_keepalive_interval_seconds
                    .unwrap_or(DEFAULT_HTTP2_KEEPALIVE_INTERVAL_SECONDS),
            ),
            http2_keepalive_timeout_seconds: Some(
                self.http2_keepalive_timeout_seconds
                    .unwrap_or(DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_SECONDS),
            ),
            max_connection_age_seconds: Some(
                self.max_connection_age_seconds
                    .unwrap_or(DEFAULT_MAX_CONNECTION_AGE_SECONDS),
            ),
            shutdown_grace_seconds: Some(
                self.shutdown_grace_seconds
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
            ),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            auth_file: self.auth_file.clone(),
            allow_unauthenticated: Some(self.allow_unauthenticated()),
            max_connections: Some(self.max_connections()),
            handshake_timeout_seconds: Some(self.handshake_timeout().as_secs()),
            request_body_timeout_seconds: Some(self.request_body_timeout().as_secs()),
            stream_stall_timeout_seconds: Some(self.stream_stall_timeout().as_secs()),
            max_response_buffer_bytes: Some(self.max_response_buffer_bytes()),
            max_waiting_receives: Some(self.max_waiting_receives()),
            // Its default depends on the filesystem; None says "the default".
            min_free_disk_bytes: self.min_free_disk_bytes,
            metrics_max_connections: Some(self.metrics_max_connections()),
            cors_allowed_origins: Some(self.cors_allowed_origins.clone().unwrap_or_default()),
            console: Some(self.console()),
            otlp_endpoint: self.otlp_endpoint.clone(),
            advertise_address: self.advertise_address.clone(),
            member_ttl_seconds: self
                .advertise_address
                .is_some()
                .then(|| self.member_ttl().as_secs()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_queues() == 0 {
            return Err(ConfigError::Invalid(
                "max_queues is 0; it must be at least 1".into(),
            ));
        }
        crate::storage::postgres::schema::validate_schema_name(&self.postgres_schema())
            .map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.postgres_url {
            crate::storage::postgres::ConnectOptions::parse(
                url,
                self.postgres_password_file.as_deref(),
            )
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        for (name, value) in [
            ("queue_window", self.queue_window()),
            ("total_window", self.total_window()),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} is 0; it must be at least 1"
                )));
            }
        }
        if self.max_concurrent_streams() == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_streams is 0; it must be at least 1".into(),
            ));
        }
        if self.http2_keepalive_interval().is_some() && self.http2_keepalive_timeout().is_none() {
            return Err(ConfigError::Invalid(
                "http2_keepalive_timeout_seconds is 0; it must be at least 1 while keepalive pings are on"
                    .into(),
            ));
        }
        for (name, value) in [
            ("max_connections", self.max_connections()),
            ("max_waiting_receives", self.max_waiting_receives()),
            ("metrics_max_connections", self.metrics_max_connections()),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} is 0; it must be at least 1"
                )));
            }
        }
        for (name, value) in [
            ("handshake_timeout_seconds", self.handshake_timeout()),
            ("request_body_timeout_seconds", self.request_body_timeout()),
            ("stream_stall_timeout_seconds", self.stream_stall_timeout()),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid(format!(
                    "{name} is 0; it must be at least 1"
                )));
            }
        }
        if self.max_response_buffer_bytes() < crate::limits::MAX_REQUEST_BYTES {
            return Err(ConfigError::Invalid(format!(
                "max_response_buffer_bytes is {}; it must hold a full receive, at least {} bytes",
                self.max_response_buffer_bytes(),
                crate::limits::MAX_REQUEST_BYTES
            )));
        }
        self.cors_origins().map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.otlp_endpoint {
            crate::otel::export::Endpoint::parse(url).map_err(ConfigError::Invalid)?;
        }
        self.validate_cluster()?;
        self.validate_security()
    }

    /// Cluster mode needs PostgreSQL, an address the peers can dial, and a sane TTL.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let ttl = self.member_ttl().as_secs();
        if !(MEMBER_TTL_SECONDS.contains(&ttl)) {
            return Err(ConfigError::Invalid(format!(
                "member_ttl_seconds is {ttl}; it must be {}..={}",
                MEMBER_TTL_SECONDS.start(),
                MEMBER_TTL_SECONDS.end()
            )));
        }
        let Some(address) = &self.advertise_address else {
            return Ok(());
        };
        if self.postgres_url.is_none() {
            return Err(ConfigError::Invalid(
                "advertise_address (cluster mode) needs --postgres-url: the replicas share one \
                 PostgreSQL schema"
                    .into(),
            ));
        }
        let valid = !address.is_empty()
            && address.len() <= MAX_ADVERTISE_ADDRESS_LEN
            && address
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c));
        if !valid
            || format!("http://{}", advertised(address, 1))
                .parse::<tonic::codegen::http::Uri>()
                .is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "advertise_address {address:?} is not a host or host:port (e.g. 10.0.3.7 or \
                 10.0.3.7:50051), at most {MAX_ADVERTISE_ADDRESS_LEN} bytes"
            )));
        }
        if self.tls_cert.is_some() {
            return Err(ConfigError::Invalid(
                "cluster mode (advertise_address) does not support --tls-cert yet: replicas \
                 forward calls to each other in plaintext; terminate TLS in front of the \
                 replicas (a service mesh or an ingress) instead"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Cluster mode's member TTL.
    pub fn member_ttl(&self) -> Duration {
        Duration::from_secs(
            self.member_ttl_seconds
                .unwrap_or(DEFAULT_MEMBER_TTL_SECONDS),
        )
    }

    /// TLS files come as a pair (a CA only with them), and a server other hosts can reach
    /// has an auth file unless told otherwise: protected by default, as RabbitMQ's guest user
    /// and Redis's protected mode are.
    fn validate_security(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "tls_cert is set without tls_key; give both (--tls-cert and --tls-key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "tls_key is set without tls_cert; give both (--tls-cert and --tls-key)".into(),
                ));
            }
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(ConfigError::Invalid(
                    "tls_client_ca needs TLS: give --tls-cert and --tls-key too".into(),
                ));
            }
            _ => {}
        }
        let listen = self.listen();
        if let Some(http) = self.http_listen
            && self.auth_file.is_none()
            && !http.ip().is_loopback()
            && !self.allow_unauthenticated()
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve the HTTP APIs on {http} without authentication: other hosts \
                 could read, send and delete in every queue. Give --auth-file FILE, or \
                 --allow-unauthenticated to serve without it anyway; see docs/security.md"
            )));
        }
        if self.auth_file.is_none() && !listen.ip().is_loopback() && !self.allow_unauthenticated() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {listen} without authentication: other hosts could read, \
                 send and delete in every queue. Give --auth-file FILE (SPOOL_AUTH_FILE, \
                 auth_file) with the principals and their grants, or --allow-unauthenticated \
                 (SPOOL_ALLOW_UNAUTHENTICATED=true, allow_unauthenticated = true) to serve \
                 without it anyway; see docs/security.md"
            )));
        }
        Ok(())
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or(DEFAULT_LISTEN)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    pub fn postgres_schema(&self) -> String {
        self.postgres_schema
            .clone()
            .unwrap_or_else(|| DEFAULT_POSTGRES_SCHEMA.to_string())
    }

    /// The storage backend these settings select, as the metric and the log name it.
    pub fn storage_backend(&self) -> &'static str {
        if self.postgres_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub fn max_queues(&self) -> usize {
        self.max_queues.unwrap_or(DEFAULT_MAX_QUEUES)
    }

    pub fn body_cache_bytes(&self) -> usize {
        self.body_cache_bytes.unwrap_or(DEFAULT_BODY_CACHE_BYTES)
    }

    pub fn queue_window(&self) -> usize {
        self.queue_window
            .unwrap_or(crate::queue::window::DEFAULT_QUEUE_WINDOW)
    }

    pub fn total_window(&self) -> usize {
        self.total_window
            .unwrap_or(crate::queue::window::DEFAULT_TOTAL_WINDOW)
    }

    /// The windows' bounds (see `queue::window`), with the total's budget shared by all queues.
    pub fn window_limits(&self) -> crate::queue::window::WindowLimits {
        crate::queue::window::WindowLimits::new(
            self.queue_window(),
            std::sync::Arc::new(crate::queue::window::WindowBudget::new(self.total_window())),
        )
    }

    pub fn log(&self) -> String {
        self.log.clone().unwrap_or_else(|| DEFAULT_LOG.to_string())
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or_default()
    }

    pub fn max_concurrent_streams(&self) -> u32 {
        self.max_concurrent_streams
            .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS)
    }

    fn seconds(value: u64) -> Option<Duration> {
        (value > 0).then(|| Duration::from_secs(value))
    }

    pub fn http2_keepalive_interval(&self) -> Option<Duration> {
        Self::seconds(
            self.http2_keepalive_interval_seconds
                .unwrap_or(DEFAULT_HTTP2_KEEPALIVE_INTERVAL_SECONDS),
        )
    }

    pub fn http2_keepalive_timeout(&self) -> Option<Duration> {
        Self::seconds(
            self.http2_keepalive_timeout_seconds
                .unwrap_or(DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_SECONDS),
        )
    }

    pub fn max_connection_age(&self) -> Option<Duration> {
        Self::seconds(
            self.max_connection_age_seconds
                .unwrap_or(DEFAULT_MAX_CONNECTION_AGE_SECONDS),
        )
    }

    /// The parsed `cors_allowed_origins`; an error names the bad one.
    pub fn cors_origins(&self) -> Result<crate::web::AllowedOrigins, String> {
        crate::web::AllowedOrigins::parse(self.cors_allowed_origins.as_deref().unwrap_or_default())
    }

    pub fn console(&self) -> bool {
        self.console.unwrap_or(true)
    }

    pub fn allow_unauthenticated(&self) -> bool {
        self.allow_unauthenticated.unwrap_or(false)
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(
            self.handshake_timeout_seconds
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_SECONDS),
        )
    }

    pub fn request_body_timeout(&self) -> Duration {
        Duration::from_secs(
            self.request_body_timeout_seconds
                .unwrap_or(DEFAULT_REQUEST_BODY_TIMEOUT_SECONDS),
        )
    }

    pub fn stream_stall_timeout(&self) -> Duration {
        Duration::from_secs(
            self.stream_stall_timeout_seconds
                .unwrap_or(DEFAULT_STREAM_STALL_TIMEOUT_SECONDS),
        )
    }

    pub fn max_response_buffer_bytes(&self) -> usize {
        self.max_response_buffer_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BUFFER_BYTES)
    }

    pub fn max_waiting_receives(&self) -> usize {
        self.max_waiting_receives
            .unwrap_or(DEFAULT_MAX_WAITING_RECEIVES)
    }

    pub fn metrics_max_connections(&self) -> usize {
        self.metrics_max_connections
            .unwrap_or(DEFAULT_METRICS_MAX_CONNECTIONS)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(
            self.shutdown_grace_seconds
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
        )
    }
}

/// Parts of a setting's name that mark its value as secret: the startup log shows
/// [`REDACTED`] instead. A credential added later (a token file's contents) is masked by its
/// name alone; a password inside `postgres_url` is masked by `to_redacted_json` itself.
pub const SECRET_NAME_PARTS: &[&str] = &["password", "secret", "token", "credential"];

/// What the startup log shows for a secret setting.
pub const REDACTED: &str = "<redacted>";

impl Settings {
    /// The settings as one JSON object (keys in name order), secrets redacted: the startup
    /// log's JSON form. Fails only for a value JSON cannot hold (a data_dir that is not UTF-8).
    pub fn to_redacted_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut effective = self.effective();
        effective.postgres_url = effective
            .postgres_url
            .map(|url| crate::storage::postgres::connect::redact_password(&url, REDACTED));
        serde_json::to_value(effective).map(redact)
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

fn read_file(path: &Path) -> Result<Settings, ConfigError> {
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
        let settings = Settings::default().resolve().expect("defaults");
        assert_eq!(settings.listen(), DEFAULT_LISTEN);
        assert_eq!(settings.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(settings.max_queues(), DEFAULT_MAX_QUEUES);
        assert_eq!(settings.metrics_listen, None);
        assert_eq!(settings.log_format(), LogFormat::Human);
        assert_eq!(settings.max_connection_age(), None);
    }

    #[test]
    fn arguments_override_the_file() {
        let config = file(
            "listen = \"0.0.0.0:6000\"\nmax_queues = 5\nlog_format = \"json\"\n\
             metrics_listen = \"127.0.0.1:9191\"\nmax_connection_age_seconds = 60\n\
             allow_unauthenticated = true\n",
        );
        let settings = Settings {
            config: Some(config.path().to_path_buf()),
            max_queues: Some(7),
            ..Default::default()
        }
        .resolve()
        .expect("resolve");
        assert_eq!(settings.listen().to_string(), "0.0.0.0:6000");
        assert_eq!(settings.max_queues(), 7);
        assert_eq!(settings.log_format(), LogFormat::Json);
        assert_eq!(settings.metrics_listen.map(|a| a.port()), Some(9191));
        assert_eq!(settings.max_connection_age(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn cors_origins_and_the_console_come_from_the_file_and_are_checked() {
        let config =
            file("cors_allowed_origins = [\"https://ops.example.com\"]\nconsole = false\n");
        let settings = Settings {
            config: Some(config.path().to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .expect("resolve");
        assert!(!settings.console());
        let origins = settings.cors_origins().expect("origins");
        let origin = |text: &'static str| tonic::codegen::http::HeaderValue::from_static(text);
        assert!(origins.allows(&origin("https://ops.example.com"), None, true));
        assert!(!origins.allows(&origin("https://other.example.com"), None, true));
        assert!(Settings::default().resolve().expect("defaults").console());

        let bad = Settings {
            cors_allowed_origins: Some(vec!["ops.example.com".into()]),
            ..Default::default()
        }
        .resolve()
        .expect_err("not an origin");
        assert!(
            bad.to_string()
                .contains("\"ops.example.com\" is not an origin"),
            "{bad}"
        );
    }

    #[test]
    fn settings_render_as_lines_and_json_with_secrets_redacted() {
        let settings = Settings {
            max_queues: Some(7),
            ..Default::default()
        }
        .resolve()
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
    fn other_hosts_are_served_only_with_an_auth_file_or_when_told() {
        let listen = |addr: &str| Settings {
            listen: Some(addr.parse().expect("addr")),
            ..Default::default()
        };
        let refused = listen("0.0.0.0:50051").resolve().expect_err("unprotected");
        let text = refused.to_string();
        assert!(
            text.contains("--auth-file") && text.contains("--allow-unauthenticated"),
            "{text}"
        );
        assert!(listen("[::]:1").resolve().is_err());
        for loopback in ["127.0.0.1:1", "127.0.0.2:1", "[::1]:1"] {
            assert!(listen(loopback).resolve().is_ok(), "{loopback}");
        }
        let allowed = Settings {
            allow_unauthenticated: Some(true),
            ..listen("0.0.0.0:1")
        };
        assert!(allowed.resolve().is_ok());
        let with_auth = Settings {
            auth_file: Some("/etc/spool/principals.toml".into()),
            ..listen("0.0.0.0:1")
        };
        assert!(with_auth.resolve().is_ok());
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let cases = [
            (Some("c.pem"), None, None, "tls_cert is set without tls_key"),
            (None, Some("k.pem"), None, "tls_key is set without tls_cert"),
            (None, None, Some("ca.pem"), "tls_client_ca needs TLS"),
        ];
        for (cert, key, ca, expected) in cases {
            let error = Settings {
                tls_cert: cert.map(PathBuf::from),
                tls_key: key.map(PathBuf::from),
                tls_client_ca: ca.map(PathBuf::from),
                ..Default::default()
            }
            .resolve()
            .expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn a_password_in_the_postgres_url_is_redacted() {
        let settings = Settings {
            postgres_url: Some("postgres://spool:hunter2@db:5432/spool?sslmode=disable".into()),
            ..Default::default()
        }
        .resolve()
        .expect("resolve");
        let lines = settings.to_redacted_lines().expect("lines").join("\n");
        assert!(!lines.contains("hunter2"), "{lines}");
        assert!(
            lines.contains(&format!(
                "postgres_url = \"postgres://spool:{REDACTED}@db:5432/spool?sslmode=disable\""
            )),
            "{lines}"
        );
        assert!(lines.contains("postgres_schema = \"spool\""), "{lines}");
        assert_eq!(settings.storage_backend(), "postgres");
        let bad = Settings {
            postgres_schema: Some("Bad-Name".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(bad.to_string().contains("Bad-Name"), "{bad}");
    }

    #[test]
    fn cluster_mode_needs_postgres_and_a_dialable_address() {
        let cluster = |address: &str, postgres: bool| Settings {
            advertise_address: Some(address.into()),
            postgres_url: postgres.then(|| "host=db user=spool".into()),
            ..Settings::default()
        };
        cluster("10.0.0.7", true).validate().expect("a pod IP");
        cluster("spool-0.spool:50051", true)
            .validate()
            .expect("host:port");
        let alone = cluster("10.0.0.7", false)
            .validate()
            .expect_err("no PostgreSQL");
        assert!(alone.to_string().contains("--postgres-url"), "{alone}");
        let bad = cluster("http://x/y", true).validate().expect_err("a URL");
        assert!(bad.to_string().contains("advertise_address"), "{bad}");
        let ttl = Settings {
            member_ttl_seconds: Some(1),
            ..cluster("10.0.0.7", true)
        };
        let short = ttl.validate().expect_err("TTL too short");
        assert!(
            short.to_string().contains("member_ttl_seconds is 1"),
            "{short}"
        );
        assert_eq!(advertised("10.0.0.7", 50051), "10.0.0.7:50051");
        assert_eq!(advertised("10.0.0.7:6000", 50051), "10.0.0.7:6000");
        assert_eq!(advertised("fd00::7", 50051), "[fd00::7]:50051");
        assert_eq!(advertised("[fd00::7]:6000", 50051), "[fd00::7]:6000");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let unknown = file("max_queus = 5\n");
        let err = Settings {
            config: Some(unknown.path().to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("max_queus"), "{err}");
        let wrong_type = file("max_queues = \"many\"\n");
        let err = Settings {
            config: Some(wrong_type.path().to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("max_queues"), "{err}");
        let missing = Settings {
            config: Some(PathBuf::from("/nonexistent/spool.toml")),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/spool.toml"));
        let zero = Settings {
            max_queues: Some(0),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(zero.to_string().contains("max_queues"));
    }
}
