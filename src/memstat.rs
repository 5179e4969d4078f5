//! Process memory figures from `/proc/self/status` (Linux), for reports and scale tests.

/// Memory figures of this process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStat {
    /// Peak resident set size (`VmHWM`).
    pub peak_rss: u64,
    /// Current resident set size (`VmRSS`).
    pub rss: u64,
    /// Resident anonymous memory (`RssAnon`).
    pub rss_anon: u64,
    /// Resident file-backed memory, e.g. mapped file pages (`RssFile`).
    pub rss_file: u64,
}

/// Reads the figures; `None` where `/proc` is unavailable.
pub fn read() -> Option<MemStat> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(parse(&text))
}

/// Parses the text of `/proc/self/status`.
pub fn parse(text: &str) -> MemStat {
    let mut m = MemStat::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kib = rest
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            * 1024;
        match key {
            "VmHWM" => m.peak_rss = kib,
            "VmRSS" => m.rss = kib,
            "RssAnon" => m.rss_anon = kib,
            "RssFile" => m.rss_file = kib,
            _ => {}
        }
    }
    m
}

/// Resets the peak-RSS mark to the current RSS (writes `5` to `/proc/self/clear_refs`).
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_status() {
        let m = super::parse(
            "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t1024 kB\nRssAnon:\t512 kB\nRssFile:\t 256 kB\n",
        );
        assert_eq!(m.peak_rss, 2 << 20);
        assert_eq!(m.rss, 1 << 20);
        assert_eq!(m.rss_anon, 512 << 10);
        assert_eq!(m.rss_file, 256 << 10);
    }
}
