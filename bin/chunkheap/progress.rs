//! Progress bars on stderr (indicatif), shown only on a terminal unless asked.

use std::io::IsTerminal;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// When to draw progress bars.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProgressMode {
    /// Only when stderr is a terminal.
    Auto,
    /// Always (e.g. under `script` or in logs).
    Always,
    /// Never.
    Never,
}

/// A byte-counting progress bar (or nothing).
pub struct Reporter {
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// A bar over `total` bytes labelled `what`.
    pub fn new(mode: ProgressMode, total: u64, what: &str) -> Reporter {
        let show = match mode {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        if !show {
            return Reporter { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>8} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {prefix}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        Reporter { bar: Some(bar) }
    }

    /// Adds processed bytes (thread-safe).
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
            let m = chunkheap::memory::global();
            b.set_prefix(format!(
                "mem {}/{}",
                chunkheap::memory::human_bytes(m.used()),
                chunkheap::memory::human_bytes(m.limit())
            ));
        }
    }

    /// True once every byte has been counted.
    pub fn done(&self) -> bool {
        self.bar
            .as_ref()
            .is_some_and(|b| b.length().is_some_and(|l| b.position() >= l))
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
