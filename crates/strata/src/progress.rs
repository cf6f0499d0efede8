//! Progress on stderr: a spinner with the phase, a count while a source fetches packages or
//! runs scripts, a byte bar while layers are written; nothing when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_build::Reporter;

/// Draws build progress.
pub struct Progress {
    bar: ProgressBar,
    /// Bytes already counted per blob, as a push reports running totals.
    seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Progress {
    /// A bar on stderr if it is a terminal, hidden otherwise.
    pub fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            // No bar until something says how much there is to do (no empty `0/0`).
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            seen: Default::default(),
        }
    }

    /// Shows a phase message.
    pub fn phase(&self, what: &str) {
        self.bar.set_message(what.to_owned());
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress {
    fn byte_style(&self) {
        self.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    }
}

impl strata_source::Reporter for Progress {
    fn items_started(&self, what: &str, total: u64) {
        self.bar.set_position(0);
        self.bar.set_length(total);
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar.set_message(what.to_owned());
    }

    fn item_done(&self, _item: &str) {
        self.bar.inc(1);
    }
}

impl Reporter for Progress {
    fn phase(&self, what: &str) {
        Progress::phase(self, what);
    }

    fn layers_planned(&self, layers: usize, bytes: u64) {
        self.bar.set_position(0);
        self.bar.set_length(bytes);
        self.byte_style();
        self.bar.set_message(format!("writing {layers} layers"));
    }

    fn layer_done(&self, _index: usize, bytes: u64, _cached: bool) {
        // A layer made after the plan (the configure layer) grows the total rather than
        // pushing the bar past its end.
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        if pos + bytes > len {
            self.bar.set_length(pos + bytes);
        }
        self.bar.inc(bytes);
    }
}

/// `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl strata_registry::Reporter for Progress {
    fn blob_started(&self, _digest: &str, size: u64) {
        self.byte_style();
        self.bar.inc_length(size);
    }

    fn blob_progress(&self, digest: &str, bytes: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = seen.insert(digest.to_owned(), bytes).unwrap_or(0);
        self.bar.inc(bytes.saturating_sub(last));
    }

    fn blob_done(&self, digest: &str, _outcome: strata_registry::BlobOutcome) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let _ = seen.get(digest);
    }
}
