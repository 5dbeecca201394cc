//! Files re-read when they change on disk: the TLS certificate and key, the client CA, the
//! auth file. cert-manager and Kubernetes Secret volumes replace them in place (a Secret
//! volume swaps a symlink), so the contents are polled and compared, which sees every kind
//! of replacement; modification times can stay the same within a second, or go backwards.
//!
//! A change that cannot be applied (unreadable, not valid) is logged at ERROR and counted, and
//! what was in force stays in force; the same bad contents are reported once, not at every poll.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often watched files are read. They are small (a certificate, a key, a list of
/// principals), so reading them is cheap, and a rotation takes effect within this.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Each file's contents, in order; the error names the file that could not be read.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
        })
        .collect()
}

/// Polls `paths` until `stop` is cancelled; whenever their contents differ from the last seen
/// (at first `loaded`, what the server started with), hands them to `apply`. `apply` returns
/// a summary of what it now uses, for the log, or why it cannot; `failed` is told of every
/// failure (for a metric).
pub async fn watch_files<A, F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    loaded: Vec<Vec<u8>>,
    stop: CancellationToken,
    mut apply: A,
    failed: F,
) where
    A: FnMut(&[Vec<u8>]) -> Result<String, String>,
    F: Fn(),
{
    let mut seen = loaded;
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RELOAD_POLL_INTERVAL) => {}
        }
        let reading = paths.clone();
        let read = tokio::task::spawn_blocking(move || read_all(&reading))
            .await
            .unwrap_or_else(|error| Err(format!("the read task failed: {error}")));
        let outcome = match read {
            Ok(contents) if contents == seen => {
                // Readable again and unchanged: a later failure is news again.
                last_error = None;
                continue;
            }
            Ok(contents) => {
                let applied = apply(&contents);
                seen = contents;
                applied
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(summary) => {
                tracing::info!(what, "reloaded: {summary}");
                last_error = None;
            }
            Err(error) => {
                if last_error.as_ref() != Some(&error) {
                    failed();
                    tracing::error!(
                        what,
                        %error,
                        "cannot reload; the previous version stays in force"
                    );
                    last_error = Some(error);
                }
            }
        }
    }
}
