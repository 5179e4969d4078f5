//! The budget itself. Thread-safe: every method may be called from any thread.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Something that can give memory back on request (evict clean chunks, spill dirty ones, drop
/// cached buffers).
pub trait Reclaim: Send + Sync {
    /// Frees up to `want` bytes (by dropping reservations); returns the bytes released.
    fn reclaim(&self, want: u64) -> u64;

    /// How costly reclaiming is here: cheaper reclaimers are asked first (0 for caches that just
    /// drop memory, 1 for evicting or spilling data).
    fn cost(&self) -> u32 {
        1
    }
}

struct State {
    used: u64,
    peak: u64,
    /// Bytes held per category ("mapped chunk", "chunk buffer", ...).
    holders: BTreeMap<&'static str, u64>,
    /// Bumped on every release, so waiters can tell progress from a stall.
    releases: u64,
}

struct Inner {
    limit: Mutex<u64>,
    stall: Mutex<Duration>,
    state: Mutex<State>,
    released: Condvar,
    reclaimers: Mutex<Vec<Weak<dyn Reclaim>>>,
}

/// A memory limit shared by everything that allocates data. Cheap to clone (an `Arc`): clones
/// share one account.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

/// Bytes held against a budget; released on drop.
#[must_use = "the reservation is released when dropped"]
pub struct Reservation {
    budget: MemoryBudget,
    bytes: u64,
    what: &'static str,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Physical memory of this machine in bytes (from `sysconf`), if known.
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The default limit: half of physical memory (4 GiB if unknown).
pub fn default_limit() -> u64 {
    physical_memory().map_or(4 << 30, |m| m / 2)
}

/// The process-wide budget every reader, writer and heap object draws from.
pub fn global() -> &'static MemoryBudget {
    static GLOBAL: OnceLock<MemoryBudget> = OnceLock::new();
    GLOBAL.get_or_init(|| MemoryBudget::new(default_limit()))
}

/// Has the C allocator give every block of 256 KiB or more a mapping of its own, returned to the
/// system as soon as it is freed (glibc's `M_MMAP_THRESHOLD`; other C libraries are left alone).
/// Budgets count live buffers; with glibc's default, which raises the threshold to the size of
/// each large block freed, freed buffers stay resident in its heaps, and RSS outgrew a sort's
/// budget by up to 30 %. This setting is process-wide, so the library never applies it by
/// itself: the CLI calls it at start, and a program that wants its RSS bounded by its budget
/// may do the same. Blocks of that size then cost fresh page faults when allocated again
/// (2-4 % slower sorts here, other workloads level).
pub fn return_large_frees_to_system() {
    crate::storage::mmap::unmap_large_frees();
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit: Mutex::new(limit),
                stall: Mutex::new(Duration::from_secs(10)),
                state: Mutex::new(State {
                    used: 0,
                    peak: 0,
                    holders: BTreeMap::new(),
                    releases: 0,
                }),
                released: Condvar::new(),
                reclaimers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// True if `other` is this same budget (clones share one account).
    pub fn same(&self, other: &MemoryBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        *lock(&self.inner.limit)
    }

    /// Changes the limit. A limit below what is reserved asks the reclaimers for the excess,
    /// cheapest first: pooled buffers, then heaps, which evict clean chunks and spill dirty ones
    /// to their temp files (synchronously, in this call). Reservations still held are kept even
    /// if they now exceed it.
    pub fn set_limit(&self, limit: u64) {
        *lock(&self.inner.limit) = limit;
        self.inner.released.notify_all();
        let excess = self.used().saturating_sub(limit);
        if excess > 0 {
            self.reclaim(excess);
        }
    }

    /// How long [`reserve`](Self::reserve) waits without any release before failing.
    pub fn stall_timeout(&self) -> Duration {
        *lock(&self.inner.stall)
    }

    /// Sets the stall timeout.
    pub fn set_stall_timeout(&self, d: Duration) {
        *lock(&self.inner.stall) = d;
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        lock(&self.inner.state).used
    }

    /// Most bytes ever reserved at once (since creation or [`reset_peak`](Self::reset_peak)).
    pub fn peak(&self) -> u64 {
        lock(&self.inner.state).peak
    }

    /// Resets the peak to the current use.
    pub fn reset_peak(&self) {
        let mut s = lock(&self.inner.state);
        s.peak = s.used;
    }

    /// Bytes held per category, largest first.
    pub fn holders(&self) -> Vec<(&'static str, u64)> {
        let s = lock(&self.inner.state);
        let mut v: Vec<_> = s
            .holders
            .iter()
            .filter(|e| *e.1 > 0)
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }

    /// Registers something that can give memory back under pressure (held weakly).
    pub fn add_reclaimer(&self, r: Weak<dyn Reclaim>) {
        let mut rs = lock(&self.inner.reclaimers);
        // Dropped ones go here too, not only under pressure (a direct-write file adds one each).
        rs.retain(|w| w.strong_count() > 0);
        rs.push(r);
    }

    /// Reserves `bytes` if they fit now, without reclaiming or waiting.
    pub fn try_reserve(&self, bytes: u64, what: &'static str) -> Option<Reservation> {
        let limit = self.limit();
        let mut s = lock(&self.inner.state);
        if s.used.saturating_add(bytes) > limit {
            return None;
        }
        Some(self.grant(&mut s, bytes, what))
    }

    fn grant(&self, s: &mut State, bytes: u64, what: &'static str) -> Reservation {
        s.used += bytes;
        s.peak = s.peak.max(s.used);
        *s.holders.entry(what).or_insert(0) += bytes;
        Reservation {
            budget: self.clone(),
            bytes,
            what,
        }
    }

    /// Reserves `bytes` unconditionally, even past the limit: for a copy that replaces memory
    /// about to be released (the accounting stays exact; only the limit is briefly exceeded).
    pub fn reserve_forced(&self, bytes: u64, what: &'static str) -> Reservation {
        let mut s = lock(&self.inner.state);
        self.grant(&mut s, bytes, what)
    }

    /// Asks the reclaimers for `want` bytes; returns what they released.
    fn reclaim(&self, want: u64) -> u64 {
        let live: Vec<Arc<dyn Reclaim>> = {
            let mut rs = lock(&self.inner.reclaimers);
            rs.retain(|w| w.strong_count() > 0);
            rs.iter().filter_map(Weak::upgrade).collect()
        };
        let mut live = live;
        live.sort_by_key(|r| r.cost());
        let mut got = 0;
        for r in live {
            if got >= want {
                break;
            }
            got += r.reclaim(want - got);
        }
        got
    }

    /// Reserves `bytes` for `what`: reclaims evictable memory if needed, then waits for other
    /// holders to release (backpressure). Fails when the request exceeds the limit by itself, or
    /// when nothing is released for the stall timeout.
    pub fn reserve(&self, bytes: u64, what: &'static str) -> Result<Reservation> {
        let limit = self.limit();
        if bytes > limit {
            return Err(self.out_of_budget(bytes, what, "the request alone exceeds the limit"));
        }
        if let Some(r) = self.try_reserve(bytes, what) {
            return Ok(r);
        }
        let stall = self.stall_timeout();
        let mut deadline = Instant::now() + stall;
        let mut last_releases = lock(&self.inner.state).releases;
        loop {
            let short = {
                let s = lock(&self.inner.state);
                (s.used + bytes).saturating_sub(self.limit())
            };
            if short > 0 {
                self.reclaim(short);
            }
            let mut s = lock(&self.inner.state);
            loop {
                if s.used.saturating_add(bytes) <= self.limit() {
                    return Ok(self.grant(&mut s, bytes, what));
                }
                if s.releases != last_releases {
                    // Someone released memory: progress, so keep waiting.
                    last_releases = s.releases;
                    deadline = Instant::now() + stall;
                    break; // try reclaiming again
                }
                let now = Instant::now();
                if now >= deadline {
                    drop(s);
                    return Err(self.out_of_budget(
                        bytes,
                        what,
                        "nothing was released while waiting",
                    ));
                }
                let wait = (deadline - now).min(Duration::from_millis(50));
                s = self
                    .inner
                    .released
                    .wait_timeout(s, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                if s.releases == last_releases {
                    // A periodic wake-up: reclaimers may have new candidates.
                    break;
                }
            }
        }
    }

    fn out_of_budget(&self, bytes: u64, what: &'static str, why: &str) -> Error {
        let holders = self
            .holders()
            .into_iter()
            .take(5)
            .map(|(k, v)| format!("{k} {}", human(v)))
            .collect::<Vec<_>>()
            .join(", ");
        Error::OutOfMemoryBudget {
            limit: self.limit(),
            used: self.used(),
            asked: bytes,
            what: what.to_string(),
            why: why.to_string(),
            holders: if holders.is_empty() {
                "none".into()
            } else {
                holders
            },
        }
    }

    fn release(&self, bytes: u64, what: &'static str) {
        let mut s = lock(&self.inner.state);
        s.used -= bytes;
        if let Some(h) = s.holders.get_mut(what) {
            *h -= bytes;
        }
        s.releases += 1;
        drop(s);
        self.inner.released.notify_all();
    }
}

impl Reservation {
    /// A reservation of nothing (placeholder for moved-out values).
    pub fn empty() -> Reservation {
        Reservation {
            budget: global().clone(),
            bytes: 0,
            what: "nothing",
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True if the reservation is held in the process-wide budget.
    pub fn is_global(&self) -> bool {
        self.budget.same(global())
    }

    /// True if the reservation is held in `budget`.
    pub fn is_in(&self, budget: &MemoryBudget) -> bool {
        self.budget.same(budget)
    }

    /// The category.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Releases part of the reservation (e.g. a buffer shrank).
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.release(self.bytes - bytes, self.what);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes, self.what);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reservation({} bytes of {})", self.bytes, self.what)
    }
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryBudget(used {} of {})", self.used(), self.limit())
    }
}

/// Binary size text (`1.5 GiB`).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn reservations_add_up_and_return_to_zero() {
        let b = MemoryBudget::new(100);
        let r1 = b.reserve(40, "a").unwrap();
        let r2 = b.reserve(60, "b").unwrap();
        assert_eq!(b.used(), 100);
        assert!(b.try_reserve(1, "c").is_none());
        assert_eq!(b.holders(), vec![("b", 60), ("a", 40)]);
        drop(r1);
        assert_eq!(b.used(), 60);
        let mut r3 = b.reserve(30, "a").unwrap();
        r3.shrink_to(10);
        assert_eq!(b.used(), 70);
        drop((r2, r3));
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 100);
    }

    #[test]
    fn too_big_fails_at_once_naming_everything() {
        let b = MemoryBudget::new(1 << 20);
        let _hold = b.reserve(1000, "mapped chunk").unwrap();
        let e = b.reserve(2 << 20, "sort run").unwrap_err().to_string();
        assert!(
            e.contains("1.0 MiB") && e.contains("2.0 MiB") && e.contains("sort run"),
            "{e}"
        );
        assert!(e.contains("mapped chunk"), "{e}");
    }

    #[test]
    fn stalls_fail_after_the_timeout() {
        let b = MemoryBudget::new(100);
        b.set_stall_timeout(Duration::from_millis(100));
        let _hold = b.reserve(80, "held").unwrap();
        let e = b.reserve(50, "wanted").unwrap_err().to_string();
        assert!(e.contains("nothing was released"), "{e}");
    }

    #[test]
    fn waits_for_releases_from_other_threads() {
        let b = MemoryBudget::new(100);
        let hold = b.reserve(80, "held").unwrap();
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.reserve(50, "wanted").map(|r| r.bytes()));
        std::thread::sleep(Duration::from_millis(50));
        drop(hold);
        assert_eq!(t.join().unwrap().unwrap(), 50);
        assert_eq!(b.used(), 0);
    }

    struct Cache {
        held: Mutex<Vec<Reservation>>,
        calls: AtomicU64,
    }

    impl Reclaim for Cache {
        fn reclaim(&self, want: u64) -> u64 {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut held = lock(&self.held);
            let mut got = 0;
            while got < want {
                match held.pop() {
                    Some(r) => got += r.bytes(),
                    None => break,
                }
            }
            got
        }
    }

    impl Cache {
        /// A cache of `n` reservations of `bytes` from `b`, registered as its reclaimer.
        fn holding(b: &MemoryBudget, n: usize, bytes: u64) -> Arc<Cache> {
            let cache = Arc::new(Cache {
                held: Mutex::new(Vec::new()),
                calls: AtomicU64::new(0),
            });
            for _ in 0..n {
                let r = b.reserve(bytes, "cached").unwrap();
                lock(&cache.held).push(r);
            }
            let weak: Weak<dyn Reclaim> = Arc::downgrade(&(cache.clone() as Arc<dyn Reclaim>));
            b.add_reclaimer(weak);
            cache
        }
    }

    #[test]
    fn reclaimers_are_asked_before_waiting() {
        let b = MemoryBudget::new(100);
        let cache = Cache::holding(&b, 4, 25);
        let r = b.reserve(60, "new").unwrap();
        assert_eq!(lock(&cache.held).len(), 1, "exactly enough was reclaimed");
        assert_eq!(b.used(), 85);
        assert_eq!(cache.calls.load(Ordering::Relaxed), 1);
        drop(r);
    }

    #[test]
    fn a_lowered_limit_reclaims_the_excess() {
        let b = MemoryBudget::new(100);
        let cache = Cache::holding(&b, 4, 20);
        let pinned = b.reserve(20, "pinned").unwrap();
        b.set_limit(50);
        assert_eq!(
            b.used(),
            40,
            "cached reservations enough for the excess were reclaimed"
        );
        b.set_limit(10);
        assert_eq!(b.used(), 20, "all that could be, the pinned one kept");
        b.set_limit(100);
        assert_eq!(cache.calls.load(Ordering::Relaxed), 2);
        drop(pinned);
    }
}
