//! Client strings in logs, and log floods: what a client sends must not decide how large a log
//! line is, what it looks like, or how many lines there are.
//!
//! - [`Shown`] writes a client string (a queue name, a prefix, a peer's text) cut to
//!   [`LOGGED_CLIENT_CHARS`] characters and escaped as Rust's Debug does (quotes, `\n`, `\u{1b}`),
//!   so a newline cannot forge a line in the human format and ANSI escapes reach no terminal.
//! - [`LogLimiter`] lets through at most [`LINES_PER_SECOND`] lines a second per reason, and says
//!   how many it held back once the next second starts.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Characters of a client string a log line keeps: a queue name is at most 64, so whatever is
/// longer is not a name and the start of it identifies it well enough.
pub const LOGGED_CLIENT_CHARS: usize = 128;

/// Lines a second of one reason (a kind of refusal): enough to see what is happening, few
/// enough that a client looping on a refused call cannot grow the log by more than a few KB/s.
pub const LINES_PER_SECOND: u32 = 10;

const WINDOW: Duration = Duration::from_secs(1);

/// A client string as a log field: cut and escaped. `queue = %Shown(&name)`.
#[derive(Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(LOGGED_CLIENT_CHARS) {
            Some((end, _)) => write!(f, "{:?}… ({} bytes in all)", &self.0[..end], self.0.len()),
            None => write!(f, "{:?}", self.0),
        }
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Rate limits log lines per reason. One shared instance, [`REFUSALS`], serves every refusal
/// log of the server (authentication, grants, limits, refused calls).
pub struct LogLimiter {
    windows: Mutex<Vec<(&'static str, Window)>>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// The refusal lines of the whole server.
pub static REFUSALS: LogLimiter = LogLimiter::new();

impl LogLimiter {
    pub const fn new() -> Self {
        Self {
            windows: Mutex::new(Vec::new()),
        }
    }

    /// Whether a line for `reason` may be logged now. When a new second starts after lines
    /// were held back, logs how many first (at WARN, with the reason).
    pub fn allow(&self, reason: &'static str) -> bool {
        let (allowed, suppressed) = self.allow_at(reason, Instant::now());
        if suppressed > 0 {
            tracing::warn!(
                reason,
                suppressed,
                "suppressed {suppressed} log lines of this reason in the last second"
            );
        }
        allowed
    }

    /// [`Self::allow`] at `now`: whether to log, and how many lines the window just closed
    /// held back.
    fn allow_at(&self, reason: &'static str, now: Instant) -> (bool, u64) {
        // A poisoned lock only means a panic while counting: the counts are still usable.
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let index = match windows.iter().position(|(r, _)| *r == reason) {
            Some(index) => index,
            None => {
                windows.push((
                    reason,
                    Window {
                        started: now,
                        logged: 0,
                        suppressed: 0,
                    },
                ));
                windows.len() - 1
            }
        };
        let window = &mut windows[index].1;
        let mut reported = 0;
        if now.duration_since(window.started) >= WINDOW {
            reported = window.suppressed;
            *window = Window {
                started: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if window.logged < LINES_PER_SECOND {
            window.logged += 1;
            (true, reported)
        } else {
            window.suppressed += 1;
            (false, reported)
        }
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_strings_are_cut_and_escaped() {
        assert_eq!(Shown("orders").to_string(), "\"orders\"");
        let forged = "a\nINFO spool: forged\u{1b}[31m";
        let shown = Shown(forged).to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(
            shown.contains("\\n") && shown.contains("\\u{1b}"),
            "{shown}"
        );
        let huge = "é".repeat(8 * 1024 * 1024);
        let shown = Shown(&huge).to_string();
        assert!(
            shown.len() < 2 * LOGGED_CLIENT_CHARS + 64,
            "{}",
            shown.len()
        );
        assert!(shown.ends_with("(16777216 bytes in all)"), "{shown}");
    }

    #[test]
    fn lines_are_limited_per_reason_and_the_rest_counted() {
        let limiter = LogLimiter::new();
        let start = Instant::now();
        let allowed = (0..100).filter(|_| limiter.allow_at("a", start).0).count();
        assert_eq!(allowed, LINES_PER_SECOND as usize);
        // Another reason has its own budget.
        assert_eq!(limiter.allow_at("b", start), (true, 0));
        // The next second: allowed again, and the 90 held back are reported once.
        let later = start + WINDOW;
        assert_eq!(limiter.allow_at("a", later), (true, 90));
        assert_eq!(limiter.allow_at("a", later), (true, 0));
    }

    /// The human format with a span field as the service writes it: one line, bounded.
    #[test]
    fn a_forged_name_makes_one_bounded_line_in_the_human_format() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let name = format!("x\nINFO forged line\u{1b}[2J{}", "y".repeat(1 << 20));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("CreateQueue", queue = %Shown(&name));
            let _entered = span.enter();
            tracing::info!("request refused");
        });
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.len() < 1024, "{} bytes", text.len());
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
