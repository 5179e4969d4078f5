//! Memory-mapped windows of files. This is the only place that maps memory.
//!
//! A window maps just the byte range a chunk needs (rounded out to page boundaries, or back to
//! the 2 MiB boundary before it when that adds at most a sixteenth, so the kernel can map the
//! page cache's large folios whole) and is unmapped when dropped, so the process only keeps the
//! pages of chunks in flight resident — unlike mapping a whole multi-gigabyte file, whose pages
//! would all count toward RSS once touched.

use std::fs::File;
use std::path::Path;

use memmap2::{Advice, Mmap, MmapOptions};

use crate::error::{Error, Result};
use crate::memory::{self, Reservation};

/// A read-only mapping of `len` bytes of a file starting at `offset`.
pub struct MmapWindow {
    map: Option<Mmap>,
    skip: usize,
    len: usize,
    /// The window's pages, reserved in the global budget before mapping: once touched they are
    /// resident (RssFile) until the window is unmapped on drop.
    _res: Reservation,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Huge-page size on x86-64 and most aarch64 kernels: the granule [`advise_huge_pages`] rounds to.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `len` bytes at `ptr` (an allocation of
/// ours not yet touched) with transparent huge pages, where THP is in `madvise` mode and
/// [`huge_pages_pay`] says they are cheaper to first touch. Fresh memory costs a fault per
/// 4 KiB page on first touch; one fault per 2 MiB made large buffers (a packed matmul operand,
/// sort runs) cheaper on the project's first VM: 8192² matmul 16.5 -> 15.6 s, 512 MiB sort
/// 3.29 -> 2.81 s. Advice only: failure, or a kernel without THP, changes nothing.
pub(crate) fn advise_huge_pages(ptr: *const u8, len: usize) {
    if !huge_pages_pay() {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize + len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return;
    }
    // SAFETY: `start..end` lies inside the caller's allocation (rounded inward to whole huge
    // pages, so page-aligned as madvise requires). MADV_HUGEPAGE changes neither the mapping nor
    // its contents, only how the kernel backs it; the result is ignored because it is advice.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
}

/// Whether fresh transparent huge pages are worth asking for: not in a virtual machine whose
/// balloon device reports free memory to the host (virtio's `VIRTIO_BALLOON_F_REPORTING`).
/// Linux reports free blocks of 2 MiB and up, and the host takes their memory back, so every
/// huge page is a reported block that the host must back again, 4 KiB at a time, on first
/// touch; 4 KiB pages come from smaller free blocks, which are never reported. On the Zen 5
/// VM of `benches/RESULTS.md` (reporting on), first touching 512 MiB took 0.65-1.05 s with the
/// advice and 0.16-0.66 s without, and with the advice an 8192² matmul took 5.25-5.36 s against
/// 4.73-4.87 s (sys time 1.3-1.6 s against 0.4 s). Asked once per process.
fn huge_pages_pay() -> bool {
    static PAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAY.get_or_init(|| !balloon_reports_free_pages(Path::new("/sys/bus/virtio/devices")))
}

/// Whether a virtio balloon under `devices` (sysfs: a directory per device, with `device`, the
/// virtio device id, and `features`, the negotiated feature bits as a string of `0`/`1`, bit 0
/// first) negotiated free page reporting (feature bit 5). Unreadable entries count as no.
fn balloon_reports_free_pages(devices: &Path) -> bool {
    const BALLOON: u32 = 5;
    const F_REPORTING: usize = 5;
    let Ok(entries) = std::fs::read_dir(devices) else {
        return false;
    };
    entries.flatten().any(|e| {
        let read = |name: &str| std::fs::read_to_string(e.path().join(name)).unwrap_or_default();
        let id = read("device");
        let id = id.trim().trim_start_matches("0x");
        u32::from_str_radix(id, 16).is_ok_and(|d| d == BALLOON)
            && read("features").as_bytes().get(F_REPORTING) == Some(&b'1')
    })
}

/// Allocations of this many bytes or more get a mapping of their own from the C allocator.
pub(crate) const OWN_MAPPING_MIN: usize = 256 << 10;

/// Has glibc's allocator serve every allocation of [`OWN_MAPPING_MIN`] bytes or more from a
/// mapping of its own, unmapped when freed. By default glibc raises that threshold to the size of
/// each large block freed (up to 32 MiB), after which blocks up to that size come from its heaps
/// and, once freed, stay resident while other allocations are mapped anew: the memory budget
/// counts the live buffers, but RSS also counts the freed ones. On the machine of
/// `benches/RESULTS.md`, sorting 512 MiB under a 256 MiB budget peaked at 286 MB of RSS that
/// way and at 241 MB with the fixed threshold (2-4 % slower), and an argsort of 512 MiB under
/// 128 MiB at 176 MB against 143 MB. Other C libraries keep their defaults.
pub(crate) fn unmap_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; M_MMAP_THRESHOLD takes any size up
        // to 32 MiB (a value it refuses just leaves the default).
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_MIN as libc::c_int) };
    }
}

/// The most bytes a window of `len` bytes maps (and reserves): planners that count input windows
/// in flight count this.
pub(crate) fn window_bytes_bound(len: u64) -> u64 {
    len + len / 16 + 2 * page_size()
}

/// Where a window of `len` bytes from `offset` starts mapping: the page boundary at or below
/// `offset`, or the huge-page boundary below it when that costs at most a sixteenth more.
///
/// A mapping whose file offset sits on a 2 MiB boundary lets the kernel map the page cache's
/// 2 MiB folios (ext4 and XFS cache large files in large folios) with one fault and one TLB
/// entry each; a window shifted by a `.npy` header maps them 16 pages per fault. Touching every
/// page of a page-cached 4 GiB file through 8 MiB windows, one thread: 0.025 s and 2.9 K
/// faults with windows on 2 MiB boundaries, 0.102 s and 19 K faults with windows 4 KiB past
/// them (chunkheap's own `.npy` files have 4 KiB headers, for direct writes).
fn window_start(offset: u64, len: usize, page: u64) -> u64 {
    let huge = HUGE_PAGE as u64;
    let below = offset / huge * huge;
    if (offset - below) * 16 <= len as u64 {
        below
    } else {
        offset / page * page
    }
}

/// Whether `file`'s descriptor owns its cached pages, so that [`cached`] can answer for it: not
/// on overlayfs and FUSE, where the pages sit in another file's cache and the answer would always
/// be "no" (nor where the file system cannot be told). Asked once per open file.
pub(crate) fn cache_is_own(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
        const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
        // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs writes one `statfs` into `fs`, alive for the call; the descriptor
        // belongs to `file`, borrowed for the call.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &raw mut fs) } != 0 {
            return false;
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let kind = i64::from(fs.f_type);
        kind != OVERLAYFS_SUPER_MAGIC && kind != FUSE_SUPER_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// Whether the page holding byte `offset` of `file` is in the page cache now, asked with
/// `cachestat(2)` (Linux 6.5+), which neither reads nor starts read-ahead; `None` where the
/// kernel cannot say.
///
/// Readers use it to read cold ranges with `pread` rather than through a map: faults on a map of
/// cold bytes leave them cached in small folios, which every later map then faults in 16 pages
/// at a time (summing a 4 GiB file cached that way: 0.19 s and 35 K faults per warm run, against
/// 0.07-0.08 s and 4 K faults once it was cached by sequential `read()`s).
///
/// `None` (so readers keep mapping) on kernels before 6.5 and where the kernel refuses the
/// question (since 6.14 only a caller who may write the file, or owns it, may ask). Ask only
/// about files for which [`cache_is_own`] holds.
pub(crate) fn cached(file: &File, offset: u64) -> Option<bool> {
    let page = page_size();
    cached_pages(file, offset / page * page, page).map(|n| n > 0)
}

/// How many pages of `file`'s bytes `offset..offset + len` are in the page cache now, asked with
/// `cachestat(2)`; `None` where the kernel cannot say (see [`cached`]).
fn cached_pages(file: &File, offset: u64, len: u64) -> Option<u64> {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        use std::os::fd::AsRawFd;
        /// `cachestat`'s number in the unified syscall table (every architecture since 6.5).
        const SYS_CACHESTAT: libc::c_long = 451;
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        let range = Range { off: offset, len };
        let mut stat = Stat::default();
        const NO_FLAGS: libc::c_long = 0;
        // SAFETY: cachestat reads the `Range` and writes one `Stat`, both `repr(C)` with the
        // kernel's layout (two and five `u64`s) and alive for the call; the descriptor belongs
        // to `file`, borrowed for the call; flags must be 0.
        let r = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                libc::c_long::from(file.as_raw_fd()),
                &raw const range,
                &raw mut stat,
                NO_FLAGS,
            )
        };
        (r == 0).then_some(stat.nr_cache)
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let _ = (file, offset, len);
        None
    }
}

/// Places [`MmapWindow::map_unless_piecemeal`] touches in a 2 MiB region; more than half of
/// them faulting refuses the window.
const PIECEMEAL_TOUCHES: usize = 8;

/// This thread's minor page faults so far (`getrusage(RUSAGE_THREAD)`), or `None` where the
/// platform cannot say.
fn minor_faults() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one `rusage` into `ru`, alive for the call.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) } != 0 {
            return None;
        }
        u64::try_from(ru.ru_minflt).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Drops `file`'s clean pages from the page cache (`posix_fadvise(DONTNEED)`), for tests of
/// cold reads; advice, so a file system may keep them.
#[cfg(test)]
pub(crate) fn evict(file: &File) {
    use std::os::fd::AsRawFd;
    file.sync_all().unwrap();
    // SAFETY: advice on the descriptor of `file`, borrowed for the call; it changes no memory of
    // ours and no byte of the file.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// A temporary directory beside the build's output rather than in `/tmp`, which may be a tmpfs
/// (whose pages cannot be evicted): for tests of page-cache behaviour.
#[cfg(test)]
pub(crate) fn disk_tempdir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// Caches all of `file` in small folios, as scattered faults through a map leave it: evicts it,
/// then faults every page in through a map advised `MADV_RANDOM` (no read-ahead, so each fault
/// reads one page). For tests of reads over such a cache; `false` where the file could not be
/// evicted first, or the kernel cannot say what is cached.
#[cfg(test)]
pub(crate) fn cache_in_small_folios(file: &File) -> bool {
    if page_size() != 4096 {
        return false;
    }
    let len = file.metadata().unwrap().len();
    evict(file);
    if cached_pages(file, 0, len) != Some(0) {
        return false;
    }
    // SAFETY: a read-only private map of the whole file, which the test owns and does not
    // change while mapped; dropped at the end of this function.
    let map = unsafe { MmapOptions::new().len(len as usize).map(file) }.unwrap();
    map.advise(Advice::Random).unwrap();
    for b in map.iter().step_by(page_size() as usize) {
        std::hint::black_box(*b);
    }
    cached_pages(file, 0, len) == Some(len.div_ceil(page_size()))
}

impl MmapWindow {
    /// Maps `len` bytes of `file` from `offset`. `path` only names the file in errors.
    ///
    /// The caller must have checked that `offset + len` lies within the file.
    pub fn map(file: &File, path: &Path, offset: u64, len: usize) -> Result<MmapWindow> {
        if len == 0 {
            return Ok(MmapWindow {
                map: None,
                skip: 0,
                len: 0,
                _res: Reservation::empty(),
            });
        }
        let start = window_start(offset, len, page_size());
        let skip = (offset - start) as usize;
        let mapped = ((skip + len) as u64).div_ceil(page_size()) * page_size();
        let res = memory::global().reserve(mapped, "mapped chunk")?;
        // SAFETY: the mapping is read-only and private to this process. chunkheap never writes to
        // its inputs; if another process truncates or rewrites the file while it is mapped, reads
        // may see the new bytes or fault (SIGBUS), the hazard every mmap-based reader (NumPy's
        // memmap, ripgrep) accepts and documents. We never create references that outlive `self`.
        let map = unsafe { MmapOptions::new().offset(start).len(skip + len).map(file) }
            .map_err(|e| Error::io(path, "mmap", e))?;
        // Sequential read-ahead helps cold files; failure to advise is harmless.
        let _ = map.advise(Advice::Sequential);
        Ok(MmapWindow {
            map: Some(map),
            skip,
            len,
            _res: res,
        })
    }

    /// [`map`](Self::map), unless the page cache holds the window's bytes in small folios, which
    /// the map would fault in piecemeal: then `None`, and the caller reads them with `pread`.
    ///
    /// The page cache keeps a file in folios as large as the reads that filled it: 2 MiB after
    /// sequential `read()`s on a recent kernel, which a window aligned to them maps with one
    /// fault each, but 4 KiB after faults through a map scattered over it (NumPy's fancy
    /// indexing, another tool's random reads), in holes that memory pressure punched and small
    /// reads refilled, or on kernels without large folios for the file system. A map then faults
    /// once per 16 pages: summing a page-cached 4 GiB file held in 4 KiB folios took 0.29-0.33 s
    /// through maps (0.31-0.39 s of CPU in the kernel) against 0.10-0.12 s in 2 MiB folios;
    /// `pread` into recycled buffers reads the small folios at 25 GB/s with two threads (34 GB/s
    /// the large ones).
    ///
    /// The test: when the window holds a whole 2 MiB-aligned region of the file, entirely cached
    /// (asked first, so the test reads nothing from disk), it touches the region at 8 places
    /// 256 KiB apart, counting this thread's page faults (`getrusage(RUSAGE_THREAD)`): a 2 MiB
    /// folio is mapped whole by the first fault, folios of 1 MiB or 512 KiB take 2 or 4, and
    /// smaller ones (or fault-around batches of 16 pages) 8. More than 4 faults refuses the
    /// window. Windows without such a region, systems whose pages are not 4 KiB (where a huge
    /// page is not 2 MiB), and kernels that cannot say what is cached are mapped. A mapped
    /// window costs two `getrusage` calls and a `cachestat` more, and the fault it would have
    /// taken anyway; a refused one its map, 8 faults and its unmap before the read.
    pub fn map_unless_piecemeal(
        file: &File,
        path: &Path,
        offset: u64,
        len: usize,
    ) -> Result<Option<MmapWindow>> {
        let window = MmapWindow::map(file, path, offset, len)?;
        let huge = HUGE_PAGE as u64;
        let Some(map) = &window.map else {
            return Ok(Some(window));
        };
        if page_size() != 4096 {
            return Ok(Some(window));
        }
        let start = offset - window.skip as u64;
        let region = start.next_multiple_of(huge);
        let end = start + map.len() as u64;
        if region + huge > end || cached_pages(file, region, huge) != Some(huge / page_size()) {
            return Ok(Some(window));
        }
        let at = (region - start) as usize;
        let Some(before) = minor_faults() else {
            return Ok(Some(window));
        };
        for b in map[at..at + HUGE_PAGE]
            .iter()
            .step_by(HUGE_PAGE / PIECEMEAL_TOUCHES)
        {
            std::hint::black_box(*b);
        }
        let faults = minor_faults().map_or(0, |after| after - before);
        Ok((faults <= PIECEMEAL_TOUCHES as u64 / 2).then_some(window))
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[self.skip..self.skip + self.len],
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_page_reporting_is_read_from_the_balloon_features() {
        let dir = tempfile::tempdir().unwrap();
        let dev = |name: &str, id: &str, features: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("device"), format!("{id}\n")).unwrap();
            std::fs::write(d.join("features"), format!("{features}\n")).unwrap();
        };
        assert!(!balloon_reports_free_pages(&dir.path().join("missing")));
        // A block device with bit 5 set is not a balloon.
        dev("virtio0", "0x0002", "00100110");
        assert!(!balloon_reports_free_pages(dir.path()));
        // A balloon without reporting (stats and deflate-on-OOM only).
        dev("virtio1", "0x0005", "01100000");
        assert!(!balloon_reports_free_pages(dir.path()));
        // The features of this project's Firecracker VM: reporting on.
        dev(
            "virtio2",
            "0x0005",
            "0110010100000000000000000000000010000000",
        );
        assert!(balloon_reports_free_pages(dir.path()));
    }

    #[test]
    fn windows_over_small_folios_are_refused() {
        let dir = disk_tempdir();
        let path = dir.path().join("small.bin");
        let bytes: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        if !cache_in_small_folios(&file) {
            eprintln!("skipped: the page cache cannot be evicted or asked about here");
            return;
        }
        let len = bytes.len();
        assert!(
            MmapWindow::map_unless_piecemeal(&file, &path, 0, len)
                .unwrap()
                .is_none()
        );
        // Too short to hold a whole 2 MiB-aligned region: mapped whatever the folios.
        let w = MmapWindow::map_unless_piecemeal(&file, &path, 4096, 1 << 20).unwrap();
        assert_eq!(w.unwrap().bytes(), &bytes[4096..4096 + (1 << 20)]);
    }

    #[test]
    fn windows_start_on_huge_page_boundaries_when_that_is_cheap() {
        const MIB: u64 = 1 << 20;
        // A `.npy` chunk of 8 MiB after a 4 KiB header: back to the 2 MiB boundary.
        assert_eq!(window_start(4096, 8 << 20, 4096), 0);
        assert_eq!(window_start(64 * MIB + 4096, 8 << 20, 4096), 64 * MIB);
        // After a 128-byte header: the same boundary.
        assert_eq!(window_start(2 * MIB + 128, 8 << 20, 4096), 2 * MIB);
        // Too far past the boundary for the window's size: the page boundary.
        assert_eq!(window_start(MIB + 4100, 8 << 20, 4096), MIB + 4096);
        assert_eq!(window_start(4096 + 100, 64 << 10, 4096), 4096);
        // What is mapped stays within the bound planners count.
        for (off, len) in [
            (4096u64, 8u64 << 20),
            (MIB + 4100, 8 << 20),
            (100, 64 << 10),
        ] {
            let skip = off - window_start(off, len as usize, 4096);
            assert!((skip + len).div_ceil(4096) * 4096 <= window_bytes_bound(len));
        }
        // Exactly a sixteenth is still cheap enough.
        assert_eq!(window_start(512 << 10, 8 << 20, 4096), 0);
        assert_eq!(
            window_start((512 << 10) + 4096, 8 << 20, 4096),
            (512 << 10) + 4096
        );
    }

    #[test]
    fn bytes_just_read_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 1 << 20);
        // `None` only on kernels without cachestat (before 6.5).
        if !cache_is_own(&file) {
            return;
        }
        for off in [0, 4096, (1 << 20) - 1] {
            assert_ne!(cached(&file, off), Some(false), "offset {off}");
        }
    }

    #[test]
    fn a_shifted_window_still_reads_its_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let bytes: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        for (off, len) in [
            (4096u64, 2 << 20),
            (100, 1 << 20),
            (5000, 3000),
            (0, 3 << 20),
        ] {
            let w = MmapWindow::map(&file, &path, off, len).unwrap();
            assert_eq!(w.bytes(), &bytes[off as usize..off as usize + len]);
        }
    }
}
