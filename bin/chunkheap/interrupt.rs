//! Ctrl-C: stop at once, remove every temporary output and spill directory, exit 130.
//!
//! Outputs are only ever written to registered temporaries that are renamed into place when
//! complete, so stopping anywhere leaves the target untouched and nothing behind.

/// Installs the handler (once, at start-up).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        let n = chunkheap::storage::atomic::remove_live_temporaries();
        eprintln!(
            "\nchunkheap: interrupted; removed {n} temporary file(s)/dir(s), no output written"
        );
        std::process::exit(130);
    });
}
