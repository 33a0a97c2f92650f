//! A progress line on stderr for long steps, such as hashing a root filesystem.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Time a step runs before its progress line appears, so quick steps print nothing.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Minimum time between two redraws of the line.
const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// A progress line that redraws itself in place with `\r`. It appears only when stderr is a
/// terminal and info messages are shown (not with -q), because in a log file or a pipe the
/// redraws would be noise.
pub struct ProgressLine {
    what: String,
    total: u64,
    started: Instant,
    last_drawn: Option<Instant>,
    enabled: bool,
}

impl ProgressLine {
    /// Starts tracking a step that processes `total` bytes, described by `what`.
    pub fn start(what: impl Into<String>, total: u64) -> Self {
        let enabled = std::io::stderr().is_terminal() && log::log_enabled!(log::Level::Info);
        ProgressLine { what: what.into(), total, started: Instant::now(), last_drawn: None, enabled }
    }

    /// Records that `done` bytes are processed, and redraws the line when it is due.
    pub fn update(&mut self, done: u64) {
        if !self.enabled || self.started.elapsed() < SHOW_AFTER {
            return;
        }
        if self.last_drawn.is_some_and(|drawn| drawn.elapsed() < REDRAW_INTERVAL) && done < self.total {
            return;
        }
        self.last_drawn = Some(Instant::now());
        let percent = done.saturating_mul(100).checked_div(self.total).unwrap_or(100);
        let mib_per_second = done as f64 / self.started.elapsed().as_secs_f64() / f64::from(1 << 20);
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\rmender-preauth: {}: {percent:3}% ({} of {} MiB, {mib_per_second:.0} MiB/s)",
            self.what,
            done >> 20,
            self.total >> 20
        );
        let _ = stderr.flush();
    }

    /// Ends the line, if one was drawn, so later messages start on a line of their own.
    pub fn finish(self) {
        if self.last_drawn.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}
