//! Positional writes that bypass the page cache (`O_DIRECT`), for large outputs.
//!
//! A buffered write of a new file costs the kernel a fresh page-cache page per 4 KiB, which on a
//! VM is first-touch memory the host has to hand over (0.3–1.7 GB/s on the machine of
//! `benches/RESULTS.md`), and the dirty pages then push the inputs out of the page cache.
//! `O_DIRECT` sends the bytes from a recycled, already-touched staging buffer straight to the
//! device (1.1–1.8 GB/s there, measured with `dd oflag=direct` beside `dd` without it).
//!
//! `O_DIRECT` needs the file offset, the length and the memory address aligned to the block size
//! ([`BLOCK`], 4 KiB, which covers every logical block size in use). Writes here take any
//! offset and length: the aligned middle of each write is copied into an aligned staging buffer
//! and queued to I/O threads that write it directly, so the callers go on computing while the
//! device works. The unaligned ends are gathered into their 4 KiB blocks in memory (a block's
//! neighbours may come from other threads, in any order), and a block is queued once every byte
//! of it has arrived; the last block of the file goes padded, and the file is cut to its length in
//! [`DirectFile::finish`].
//!
//! The file is first allocated to its full length (`fallocate`): ext4 then takes direct writes
//! as overwrites of allocated blocks, under a shared inode lock, so they run side by side.
//! Writes that extend a file hold the lock exclusively for the whole device write, and anything
//! else on the file (another direct write, a buffered write) waits: on the machine of
//! `benches/RESULTS.md` that made a 4 KiB buffered write take 6 ms on average.
//!
//! Where the file system refuses `O_DIRECT` (tmpfs, some network and overlay file systems), the
//! open or the first write fails with `EINVAL`; everything then goes through an ordinary handle
//! of the same file instead.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, TryLockError, Weak};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::memory::{self, Reclaim, Reservation};

/// Alignment of offsets, lengths and memory for `O_DIRECT` writes.
pub const BLOCK: u64 = 4096;

/// Bytes copied into a staging buffer and written per `pwrite` by [`DirectFile::write_at`].
const STAGE: usize = 8 << 20;

/// A staging buffer's size: the bytes staged per write (8 MiB) and one block more, so [`DirectFile::write_with`] can
/// stage a whole default-sized chunk (8 MiB) at any offset within its first block.
pub const STAGE_BYTES: usize = STAGE + BLOCK as usize;

/// Threads that wait on the device, so the threads computing chunks do not: two writes in flight
/// keep the device busy while the next ones are being staged.
const IO_THREADS: usize = 2;

/// Staging buffers at most: one being written by each I/O thread, one being filled per thread.
const MAX_STAGES: usize = 2 * IO_THREADS;

/// Outputs smaller than this are written through the page cache (where a reader finds them
/// warm right after).
pub const DIRECT_MIN_BYTES: u64 = 256 << 20;

/// Whether large outputs may bypass the page cache: not when the environment variable
/// `CHUNKHEAP_DIRECT_IO` is `0`, `never` or `off`.
pub fn enabled() -> bool {
    !matches!(
        std::env::var("CHUNKHEAP_DIRECT_IO").as_deref(),
        Ok("0" | "never" | "off")
    )
}

/// An aligned byte buffer in safe code: a vector one alignment unit longer than needed, used
/// from its first aligned byte ([`BLOCK`]-aligned for `O_DIRECT` unless asked otherwise).
pub(crate) struct Aligned {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        Aligned::with_align(len, BLOCK as usize)
    }

    /// `len` zeroed bytes starting at a multiple of `align` (a power of two).
    pub(crate) fn with_align(len: usize, align: usize) -> Aligned {
        let bytes = vec![0u8; len + align];
        let start = bytes.as_ptr().align_offset(align);
        Aligned { bytes, start, len }
    }

    /// Usable bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    pub(crate) fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// A block waiting for the rest of its bytes.
struct Partial {
    data: Aligned,
    filled: u64,
    /// Where the bytes so far are (relative to the block), for a fallback to ordinary writes.
    ranges: Vec<(usize, usize)>,
}

/// One contiguous write of a [`Job`]: `len` bytes (a multiple of [`BLOCK`]) of the job's
/// buffer from `start` (block-aligned), at `offset` (block-aligned), of which the first `logical`
/// belong to the file (the rest pads the file's last block).
struct Piece {
    start: usize,
    len: usize,
    logical: usize,
    offset: u64,
}

/// Work for the I/O threads: one staging buffer and the pieces of the file it holds (one for a
/// plain write, one per row for [`DirectFile::write_rows_with`]).
struct Job {
    data: Aligned,
    pieces: Vec<Piece>,
    /// A staging buffer's reservation, to go back to the pool with it (`None`: a partial block).
    stage: Option<Reservation>,
}

/// What the writing threads and the I/O threads share.
struct Shared {
    /// Opened with `O_DIRECT`, or `None` when the file system refused it.
    direct: Option<File>,
    /// An ordinary handle to the same file, for the fallback.
    plain: File,
    /// Set once a direct write failed with `EINVAL`: everything after goes through `plain`.
    fallback: AtomicBool,
    /// The final path, for messages.
    target: PathBuf,
    /// Free staging buffers, and how many exist.
    pool: Mutex<(Vec<(Aligned, Reservation)>, usize)>,
    freed: Condvar,
    /// The first error an I/O thread met.
    error: Mutex<Option<Error>>,
}

impl Shared {
    fn plain_write(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.plain
            .write_all_at(bytes, offset)
            .map_err(|e| self.write_error(e, offset, bytes.len()))
    }

    /// A failed write of `len` bytes at `offset`, naming both (the kind is kept).
    fn write_error(&self, e: std::io::Error, offset: u64, len: usize) -> Error {
        let at = std::io::Error::new(e.kind(), format!("{e} (at byte {offset}, {len} bytes)"));
        Error::io(&self.target, "write", at)
    }

    fn is_direct(&self) -> bool {
        self.direct.is_some() && !self.fallback.load(Ordering::Relaxed)
    }

    /// Writes a job's pieces (on an I/O thread), through the ordinary handle when the file
    /// system refuses `O_DIRECT`.
    fn run(&self, job: &Job) -> Result<()> {
        for p in &job.pieces {
            let bytes = &job.data.get()[p.start..p.start + p.len];
            let logical = &bytes[..p.logical];
            let Some(f) = self.direct.as_ref().filter(|_| self.is_direct()) else {
                self.plain_write(logical, p.offset)?;
                continue;
            };
            match f.write_all_at(bytes, p.offset) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.fallback.store(true, Ordering::Relaxed);
                    self.plain_write(logical, p.offset)?;
                }
                Err(e) => return Err(self.write_error(e, p.offset, bytes.len())),
            }
        }
        Ok(())
    }

    /// A free staging buffer: a pooled one, a new one while fewer than [`MAX_STAGES`] exist and
    /// the budget has room (the first one waits for room), or the next one given back.
    fn take_stage(&self) -> Result<(Aligned, Reservation)> {
        let mut p = lock(&self.pool);
        loop {
            if let Some(s) = p.0.pop() {
                return Ok(s);
            }
            if p.1 < MAX_STAGES {
                let res = if p.1 == 0 {
                    Some(
                        memory::global()
                            .reserve(STAGE_BYTES as u64, "direct-write staging buffer")?,
                    )
                } else {
                    memory::global().try_reserve(STAGE_BYTES as u64, "direct-write staging buffer")
                };
                if let Some(res) = res {
                    p.1 += 1;
                    drop(p);
                    return Ok((Aligned::new(STAGE_BYTES), res));
                }
            }
            p = self.freed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_stage(&self, data: Aligned, res: Reservation) {
        lock(&self.pool).0.push((data, res));
        self.freed.notify_one();
    }

    fn failed(&self) -> Result<()> {
        match lock(&self.error).as_ref() {
            Some(e) => Err(Error::Invalid(e.to_string())),
            None => Ok(()),
        }
    }
}

/// Idle staging buffers but one go back to the budget when someone else runs short: all but the
/// first were taken only because the budget had room at the time, and holding on to them could
/// starve the computation that feeds this file (a sort's next scan waiting for its input windows
/// while the file's buffers sit idle between waves). The last one stays, so the writer always
/// has a buffer that comes back.
impl Reclaim for Shared {
    fn cost(&self) -> u32 {
        0
    }

    fn reclaim(&self, want: u64) -> u64 {
        // A writer reserving its first buffer holds the pool while it waits for the budget,
        // which may be asking us right now (on that same thread): skip rather than deadlock.
        let mut p = match self.pool.try_lock() {
            Ok(p) => p,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return 0,
        };
        let mut freed = Vec::new();
        let mut got = 0;
        while got < want && p.1 > 1 {
            let Some((data, res)) = p.0.pop() else { break };
            got += res.bytes();
            p.1 -= 1;
            freed.push((data, res));
        }
        drop(p);
        drop(freed);
        // Writers waiting for a buffer to come back may now make one of their own.
        self.freed.notify_all();
        got
    }
}

/// A file of known final length written at any offsets, from any threads, through `O_DIRECT`
/// where the file system allows it. Writes are queued to two I/O threads, so the callers
/// go on computing while the device works; errors surface in a later write or in
/// [`finish`](Self::finish).
pub struct DirectFile {
    shared: Arc<Shared>,
    len: u64,
    partial: Mutex<HashMap<u64, Partial>>,
    jobs: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl DirectFile {
    /// Opens `path` (an existing temporary file, its final content `len` bytes long) for direct
    /// writes; `plain` is an ordinary handle to it and `target` names the output in messages.
    /// A disk without room for `len` bytes is an error here, before anything is computed.
    pub fn open(path: &Path, plain: File, target: &Path, len: u64) -> Result<DirectFile> {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        if direct.is_some() && len > 0 {
            use rustix::io::Errno;
            // Without it (file systems that cannot) the writes are still right, one at a time.
            match rustix::fs::fallocate(&plain, rustix::fs::FallocateFlags::empty(), 0, len) {
                Err(e) if e == Errno::NOSPC || e == Errno::DQUOT || e == Errno::FBIG => {
                    return Err(Error::io(target, "allocate space for", e.into()));
                }
                _ => {}
            }
        }
        let shared = Arc::new(Shared {
            direct,
            plain,
            fallback: AtomicBool::new(false),
            target: target.to_path_buf(),
            pool: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
            error: Mutex::new(None),
        });
        let weak: Weak<dyn Reclaim> = Arc::downgrade(&(Arc::clone(&shared) as Arc<dyn Reclaim>));
        memory::global().add_reclaimer(weak);
        let (tx, rx) = sync_channel::<Job>(MAX_STAGES);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..IO_THREADS)
            .map(|_| {
                let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
                std::thread::spawn(move || io_thread(&shared, &rx))
            })
            .collect();
        Ok(DirectFile {
            shared,
            len,
            partial: Mutex::new(HashMap::new()),
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Whether writes currently bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.shared.is_direct()
    }

    /// Writes `bytes` at `offset`. Every byte of the file must be written exactly once before
    /// [`finish`](Self::finish); ranges may come in any order from any threads.
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        if !self.is_direct() {
            self.check_range(bytes.len(), offset)?;
            return self.shared.plain_write(bytes, offset);
        }
        // Pieces that each fit a staging buffer, cut on block boundaries.
        let mut done = 0;
        while done < bytes.len() {
            let at = offset + done as u64;
            let room = STAGE_BYTES - (at % BLOCK) as usize;
            let piece = &bytes[done..(done + room).min(bytes.len())];
            self.write_with(at, piece.len(), &mut |out| {
                out.copy_from_slice(piece);
                Ok(())
            })?;
            done += piece.len();
        }
        Ok(())
    }

    /// Writes `len` bytes at `offset` that `fill` puts straight into a staging buffer, sparing
    /// the copy [`write_at`](Self::write_at) makes. Falls back to a buffer and `write_at` when
    /// writes do not bypass the page cache or the bytes do not fit one staging buffer.
    ///
    /// The blocks the bytes cover entirely are queued in one write. A block at either end that
    /// other writes share is completed from the bytes they left (and written with the rest), or,
    /// while they have not all arrived, keeps these bytes for them.
    pub fn write_with(
        &self,
        offset: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let pad = (offset % BLOCK) as usize;
        if !self.is_direct() || pad + len > STAGE_BYTES {
            let mut b = crate::storage::Buffer::for_overwrite(len)?;
            fill(b.bytes_mut())?;
            return self.write_at(b.bytes(), offset);
        }
        self.shared.failed()?;
        self.check_range(len, offset)?;
        if len == 0 {
            return Ok(());
        }
        let (mut data, res) = self.shared.take_stage()?;
        if let Err(e) = fill(&mut data.get_mut()[pad..pad + len]) {
            self.shared.give_stage(data, res);
            return Err(e);
        }
        // Staging index `i` holds the file's byte `base + i`; the write covers blocks b0..=b1.
        let base = offset - pad as u64;
        let end = offset + len as u64;
        let (b0, b1) = (offset / BLOCK, (end - 1) / BLOCK);
        let first = self.merge_edge(&mut data, base, b0, offset, end);
        let last = if b1 == b0 {
            first
        } else {
            self.merge_edge(&mut data, base, b1, offset, end)
        };
        let from = if first { b0 } else { b0 + 1 };
        let to = if last { b1 + 1 } else { b1 };
        if from >= to {
            self.shared.give_stage(data, res);
            return Ok(());
        }
        let start = ((from - b0) * BLOCK) as usize;
        let bytes = ((to - from) * BLOCK) as usize;
        // The file's last block goes padded to a whole block; `finish` cuts the padding.
        let logical = (self.len.min(to * BLOCK) - from * BLOCK) as usize;
        self.submit(Job {
            data,
            pieces: vec![Piece {
                start,
                len: bytes,
                logical,
                offset: from * BLOCK,
            }],
            stage: Some(res),
        })
    }

    /// Writes `rows` runs of `row_len` bytes, the first at `offset` and each `stride` bytes
    /// after the one before, that `fill` puts into one dense buffer (`rows * row_len` bytes, run
    /// after run): a box of a C-order array, such as a column block's piece of a matrix's rows.
    ///
    /// When every run is whole blocks and all of them fit one staging buffer, they are staged
    /// together and one I/O thread writes them one after another: a run per staging buffer
    /// would keep the few buffers waiting on small writes (a 32 KiB direct write takes about
    /// 90 µs on the machine of `benches/RESULTS.md`, 364 MB/s) while the callers wait for a
    /// buffer. Otherwise each run goes through [`write_at`](Self::write_at).
    pub fn write_rows_with(
        &self,
        offset: u64,
        (row_len, stride, rows): (usize, u64, usize),
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let target = &self.shared.target;
        let runs = (row_len, stride, rows);
        match crate::storage::check_runs(offset, runs, (self.len, "bytes", "file")) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(m) => return Err(Error::Invalid(format!("{}: {m}", target.display()))),
        }
        // The runs lie within the file, so their bytes add up to less than `u64::MAX`, but
        // maybe not less than `usize::MAX`.
        let total = row_len.checked_mul(rows).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: {rows} runs of {row_len} bytes overflow the address space",
                target.display()
            ))
        })?;
        let aligned = [offset, row_len as u64, stride]
            .iter()
            .all(|x| x.is_multiple_of(BLOCK));
        if !self.is_direct() || !aligned || total > STAGE_BYTES {
            let mut b = crate::storage::Buffer::for_overwrite(total)?;
            fill(b.bytes_mut())?;
            for (r, run) in b.bytes().chunks(row_len).enumerate() {
                self.write_at(run, offset + r as u64 * stride)?;
            }
            return Ok(());
        }
        self.shared.failed()?;
        let (mut data, res) = self.shared.take_stage()?;
        if let Err(e) = fill(&mut data.get_mut()[..total]) {
            self.shared.give_stage(data, res);
            return Err(e);
        }
        let mut pieces: Vec<Piece> = Vec::new();
        for r in 0..rows {
            let at = offset + r as u64 * stride;
            match pieces.last_mut() {
                // Runs that follow each other in the file go as one write.
                Some(p) if p.offset + p.len as u64 == at => {
                    p.len += row_len;
                    p.logical += row_len;
                }
                _ => pieces.push(Piece {
                    start: r * row_len,
                    len: row_len,
                    logical: row_len,
                    offset: at,
                }),
            }
        }
        self.submit(Job {
            data,
            pieces,
            stage: Some(res),
        })
    }

    fn check_range(&self, len: usize, offset: u64) -> Result<()> {
        if offset + len as u64 > self.len {
            return Err(Error::Invalid(format!(
                "{}: write of {len} bytes at {offset} goes past the file's length {}",
                self.shared.target.display(),
                self.len
            )));
        }
        Ok(())
    }

    /// Block `b` of a write of the file's bytes `[offset, end)` staged in `data` (index 0 is the
    /// file's byte `base`): true when the block is complete in `data` (covered by this write
    /// alone, or completed now from the bytes other writes left), false when this write's part
    /// of it was left for a later write to complete.
    fn merge_edge(&self, data: &mut Aligned, base: u64, b: u64, offset: u64, end: u64) -> bool {
        let start = b * BLOCK;
        let want = (self.len - start).min(BLOCK);
        // This write's bytes in the block, relative to the block.
        let lo = offset.max(start) - start;
        let hi = end.min(start + want) - start;
        if lo == 0 && hi == want {
            return true;
        }
        let at = (start - base) as usize;
        let block = &mut data.get_mut()[at..at + BLOCK as usize];
        let mut map = lock(&self.partial);
        let p = map.entry(b).or_insert_with(|| Partial {
            data: Aligned::new(BLOCK as usize),
            filled: 0,
            ranges: Vec::new(),
        });
        if p.filled + (hi - lo) < want {
            p.data.get_mut()[lo as usize..hi as usize]
                .copy_from_slice(&block[lo as usize..hi as usize]);
            p.filled += hi - lo;
            p.ranges.push((lo as usize, hi as usize));
            return false;
        }
        // The other writes' bytes are everywhere in the block but `lo..hi`.
        let (lo, hi, want) = (lo as usize, hi as usize, want as usize);
        block[..lo].copy_from_slice(&p.data.get()[..lo]);
        block[hi..want].copy_from_slice(&p.data.get()[hi..want]);
        map.remove(&b);
        true
    }

    /// Waits for the queued writes, checks every block arrived and sets the file's length.
    pub fn finish(&self) -> Result<()> {
        self.drain();
        self.shared.failed()?;
        if !self.is_direct() {
            // Direct writes stopped midway: the bytes kept for blocks that writes after that
            // (which went straight to the file) never completed.
            for (b, p) in lock(&self.partial).drain() {
                for &(lo, hi) in &p.ranges {
                    self.shared
                        .plain_write(&p.data.get()[lo..hi], b * BLOCK + lo as u64)?;
                }
            }
        }
        let left = lock(&self.partial).len();
        if left > 0 {
            return Err(Error::Invalid(format!(
                "{}: {left} blocks of the output were never completely written",
                self.shared.target.display()
            )));
        }
        self.shared
            .plain
            .set_len(self.len)
            .map_err(|e| Error::io(&self.shared.target, "set the length of", e))
    }

    /// Closes the queue and waits for the I/O threads to write what is in it.
    fn drain(&self) {
        drop(lock(&self.jobs).take());
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }

    fn submit(&self, job: Job) -> Result<()> {
        let tx = lock(&self.jobs).clone();
        match tx.map(|tx| tx.send(job)) {
            Some(Ok(())) => Ok(()),
            _ => {
                self.shared.failed()?;
                Err(Error::Invalid(format!(
                    "{}: write after the output was finished",
                    self.shared.target.display()
                )))
            }
        }
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        self.drain();
    }
}

/// Writes queued jobs until the queue closes; keeps the first error and skips the writes after
/// it (the output is then discarded).
fn io_thread(shared: &Shared, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match lock(rx).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if lock(&shared.error).is_none()
            && let Err(e) = shared.run(&job)
        {
            lock(&shared.error).get_or_insert(e);
        }
        if let Some(res) = job.stage {
            shared.give_stage(job.data, res);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes `content` through a `DirectFile` in the pieces `cuts` makes, in the order `order`
    /// picks, from `threads` threads, and returns the file's bytes. Checks the writes bypassed
    /// the page cache wherever the temp dir's file system takes `O_DIRECT`.
    fn write_pieces(content: &[u8], cuts: &[usize], order: &[usize], threads: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let plain = File::create(&path).unwrap();
        let supported = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .is_ok();
        let f = DirectFile::open(&path, plain, &path, content.len() as u64).unwrap();
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c % (content.len() + 1)).collect();
        bounds.push(0);
        bounds.push(content.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        let n = pieces.len();
        for (i, &o) in order.iter().enumerate().filter(|_| n > 0) {
            let j = o % n;
            let k = i % n;
            pieces.swap(j, k);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            use rayon::prelude::*;
            // Every other piece is staged in place (`write_with`), the rest copied.
            pieces.par_iter().enumerate().for_each(|(k, &(a, b))| {
                if k % 2 == 0 {
                    f.write_at(&content[a..b], a as u64).unwrap();
                } else {
                    let mut fill = |out: &mut [u8]| {
                        out.copy_from_slice(&content[a..b]);
                        Ok(())
                    };
                    f.write_with(a as u64, b - a, &mut fill).unwrap();
                }
            });
        });
        // A file system may take the open and refuse the writes (then `fallback` is set).
        assert_eq!(
            f.is_direct() || f.shared.fallback.load(Ordering::Relaxed),
            supported
        );
        f.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    /// Idle staging buffers go back to a budget that runs short (a sort's next scan waiting for
    /// its input windows while the output's buffers sat idle between waves used to stall 10 s
    /// and fail): with every buffer idle, all but one buffer's worth of the budget can be
    /// reserved.
    #[test]
    fn idle_staging_buffers_are_reclaimed() {
        if !memory::in_own_process("storage::direct::tests::idle_staging_buffers_are_reclaimed") {
            return;
        }
        let budget = memory::global();
        let limit = 8 * STAGE_BYTES as u64;
        budget.set_limit(limit);
        budget.set_stall_timeout(std::time::Duration::from_millis(500));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let len = 4 * STAGE;
        let f = DirectFile::open(&path, File::create(&path).unwrap(), &path, len as u64).unwrap();
        if !f.is_direct() {
            // No staging buffers where the file system refuses O_DIRECT (tmpfs).
            return;
        }
        let content: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
        for (i, piece) in content.chunks(STAGE).enumerate() {
            f.write_at(piece, (i * STAGE) as u64).unwrap();
        }
        // Wait until the I/O threads have given every staging buffer back.
        let idle = || {
            let p = lock(&f.shared.pool);
            p.1 > 0 && p.0.len() == p.1
        };
        let t0 = std::time::Instant::now();
        while !idle() {
            assert!(t0.elapsed().as_secs() < 30, "writes never finished");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The writes overlapped (queued faster than written), so several buffers were made.
        assert!(lock(&f.shared.pool).1 > 1);
        let all = budget.reserve(limit - STAGE_BYTES as u64, "test").unwrap();
        assert_eq!(lock(&f.shared.pool).1, 1);
        drop(all);
        // The writer takes buffers again as it needs them.
        f.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }

    #[test]
    fn aligned_and_unaligned_writes_make_the_file() {
        let content: Vec<u8> = (0..3 * BLOCK as usize + 777)
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        // One write; writes cut inside blocks; a write inside one block.
        for cuts in [
            vec![],
            vec![128, 5000, 9000],
            vec![1, 2, 4096, 4097, 12_000],
        ] {
            let got = write_pieces(&content, &cuts, &[2, 0, 1], 2);
            assert_eq!(got, content, "cuts {cuts:?}");
        }
        // An empty file.
        assert!(write_pieces(&[], &[], &[], 1).is_empty());
    }

    #[test]
    fn large_writes_go_through_several_staging_buffers() {
        let n = STAGE * 2 + 3 * BLOCK as usize + 100;
        let content: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let got = write_pieces(&content, &[100, STAGE + 300, 2 * STAGE], &[1, 3], 2);
        assert_eq!(got, content);
        // Pieces that fill a staging buffer to the last byte, or do not fit one.
        // Piece 1 (staged in place) ends on the buffer's last byte; piece 3 does not fit.
        let cuts = [5, STAGE_BYTES, STAGE_BYTES + 7, n - 1];
        let got = write_pieces(&content, &cuts, &[0], 2);
        assert_eq!(got, content);
    }

    /// Whether the temp dir's file system takes `O_DIRECT` writes.
    fn direct_supported() -> bool {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        std::fs::write(&path, vec![0u8; BLOCK as usize]).unwrap();
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let aligned = Aligned::new(BLOCK as usize);
        f.is_ok_and(|f| f.write_all_at(aligned.get(), 0).is_ok())
    }

    /// Writes a `rows x cols` byte matrix (row stride `cols`) through a `DirectFile` as column
    /// blocks of `block` columns, each block's rows in batches of `batch` rows with
    /// [`DirectFile::write_rows_with`], the batches from `threads` threads in reverse order.
    /// Returns the file's bytes and whether every write bypassed the page cache.
    fn write_column_blocks(
        (rows, cols): (usize, usize),
        block: usize,
        batch: usize,
        threads: usize,
    ) -> (Vec<u8>, Vec<u8>, bool) {
        let content: Vec<u8> = (0..rows * cols)
            .map(|i| (i * 13 + i / 4093) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let plain = File::create(&path).unwrap();
        let f = DirectFile::open(&path, plain, &path, content.len() as u64).unwrap();
        let mut jobs = Vec::new();
        for c0 in (0..cols).step_by(block) {
            for r0 in (0..rows).step_by(batch) {
                jobs.push((c0, block.min(cols - c0), r0, batch.min(rows - r0)));
            }
        }
        jobs.reverse();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            use rayon::prelude::*;
            jobs.par_iter().for_each(|&(c0, w, r0, h)| {
                let at = (r0 * cols + c0) as u64;
                f.write_rows_with(at, (w, cols as u64, h), &mut |out| {
                    assert_eq!(out.len(), w * h);
                    for (r, run) in out.chunks_mut(w).enumerate() {
                        let from = (r0 + r) * cols + c0;
                        run.copy_from_slice(&content[from..from + w]);
                    }
                    Ok(())
                })
                .unwrap();
            });
        });
        let direct = f.is_direct();
        f.finish().unwrap();
        (std::fs::read(&path).unwrap(), content, direct)
    }

    #[test]
    fn runs_of_rows_make_the_file_whether_aligned_or_not() {
        let b = BLOCK as usize;
        // Whole-block runs staged together (one or several rows per batch, blocks of one or
        // two runs' width, rows that follow each other when a block spans every column).
        for (shape, block, batch) in [
            ((40, 4 * b), b, 7),
            ((40, 4 * b), 2 * b, 1),
            ((33, 2 * b), 2 * b, 40),
            // A batch larger than a staging buffer goes run by run.
            ((3, STAGE), STAGE / 2, 3),
            // Runs that are not whole blocks share their end blocks with other runs.
            ((50, 3000), 1000, 9),
            ((17, 4096 + 24), 2048, 5),
        ] {
            for threads in [1, 3] {
                let (got, want, direct) = write_column_blocks(shape, block, batch, threads);
                assert!(
                    got == want,
                    "{shape:?} blocks of {block}, batches of {batch}"
                );
                assert_eq!(direct, direct_supported());
            }
        }
    }

    #[test]
    fn runs_that_overlap_or_go_past_the_end_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let f = DirectFile::open(&path, File::create(&path).unwrap(), &path, 64 << 10).unwrap();
        let mut ok = |_: &mut [u8]| Ok(());
        let e = f.write_rows_with(0, (8192, 4096, 2), &mut ok).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = f
            .write_rows_with(4096, (4096, 16384, 5), &mut ok)
            .unwrap_err();
        let past = "beyond the file's 65536 bytes";
        assert!(
            e.to_string().contains("out.bin") && e.to_string().contains(past),
            "{e}"
        );
        let e = f.write_rows_with(0, (1, u64::MAX, 3), &mut ok).unwrap_err();
        assert!(e.to_string().contains(past), "{e}");
        // Nothing to write: `fill` is not called.
        f.write_rows_with(0, (0, 4096, 5), &mut |_| panic!("called"))
            .unwrap();
        // A failing fill is reported and gives its staging buffer back.
        for _ in 0..2 * MAX_STAGES {
            let e = f.write_rows_with(0, (4096, 8192, 2), &mut |_| {
                Err(Error::Invalid("no".into()))
            });
            assert!(e.is_err());
        }
    }

    #[test]
    fn incomplete_blocks_and_overlong_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let f = DirectFile::open(&path, File::create(&path).unwrap(), &path, 10_000).unwrap();
        let e = f.write_at(&[1; 20], 9_990).unwrap_err().to_string();
        assert!(e.contains("out.bin") && e.contains("past"), "{e}");
        let e = f
            .write_with(9_000, 1_001, &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("past"), "{e}");
        // A failing fill is reported and gives its staging buffer back.
        for _ in 0..2 * MAX_STAGES {
            let e = f.write_with(5_000, 4_000, &mut |_| Err(Error::Invalid("no".into())));
            assert!(e.is_err());
        }
        f.write_at(&[1; 100], 0).unwrap();
        let e = f.finish().unwrap_err().to_string();
        assert!(e.contains("never completely written"), "{e}");
    }

    #[test]
    fn a_full_disk_is_reported_naming_the_output() {
        // Every write to /dev/full fails with ENOSPC, direct or not.
        let dev = Path::new("/dev/full");
        let plain = OpenOptions::new().write(true).open(dev).unwrap();
        let data = vec![7u8; 3 * STAGE];
        let e = DirectFile::open(dev, plain, Path::new("/data/out.npy"), 3 * STAGE as u64)
            .and_then(|f| f.write_at(&data, 0).and_then(|()| f.finish()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("out.npy") && e.contains("No space left") && e.contains("at byte"),
            "{e}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_cut_any_order_any_threads(
            len in 0usize..40_000,
            cuts in proptest::collection::vec(0usize..40_000, 0..12),
            order in proptest::collection::vec(0usize..64, 0..12),
            threads in 1usize..4,
        ) {
            let content: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let got = write_pieces(&content, &cuts, &order, threads);
            prop_assert_eq!(got, content);
        }
    }
}
