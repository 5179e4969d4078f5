//! [`Buffer`]: the bytes of one chunk, owned or borrowed from a memory map, always aligned for its
//! element type.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use crate::dtype::Element;
use crate::error::Result;
use crate::memory::{self, Reclaim, Reservation};
use crate::storage::mmap::MmapWindow;

/// Bytes kept alive by someone else (a memory map, an Arrow buffer).
pub trait SharedBytes: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

impl SharedBytes for MmapWindow {
    fn bytes(&self) -> &[u8] {
        MmapWindow::bytes(self)
    }
}

impl SharedBytes for arrow_buffer::Buffer {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

/// The data of a chunk.
///
/// **Invariant:** the bytes start at an address aligned to 8, so they can be viewed as a slice of
/// any [`Element`].
/// **Invariant:** owned bytes are reserved in the global [`memory`] budget for as
/// long as they live (borrowed bytes carry their owner's reservation, e.g. a map window's).
pub struct Buffer {
    repr: Repr,
}

enum Repr {
    /// Owned, 8-byte aligned storage; `len` bytes are in use; `res` covers the whole capacity.
    Owned {
        words: Vec<u64>,
        len: usize,
        res: Reservation,
    },
    /// Borrowed bytes (checked aligned at construction).
    Shared(Box<dyn SharedBytes>),
}

/// Recycled chunk-sized allocations.
///
/// Touching freshly mapped memory costs a page fault per 4 KiB (about 1-2 GB/s on our VMs, where
/// freed pages go back to the host), several times the cost of reusing a warm buffer. Owned
/// buffers of at least [`POOL_MIN_BYTES`] go back here when dropped, up to [`POOL_MAX_BUFFERS`]
/// buffers and [`POOL_MAX_BYTES`] in all. Pooled buffers keep their reservation (they are resident
/// memory); under budget pressure the pool is emptied first.
static POOL: Mutex<Vec<(Vec<u64>, Reservation)>> = Mutex::new(Vec::new());
/// Smallest allocation worth recycling.
pub const POOL_MIN_BYTES: usize = 256 << 10;
/// Most buffers kept for reuse.
pub const POOL_MAX_BUFFERS: usize = 16;

/// Zero-extensions of at least this many bytes are written in parallel (see [`Buffer::owned`]).
const PARALLEL_FILL_MIN_BYTES: usize = 32 << 20;

/// Fresh buffers of at least this many bytes are backed by transparent huge pages where the
/// kernel allows (see `mmap::advise_huge_pages`).
const HUGE_PAGES_MIN_BYTES: usize = 8 << 20;
/// Most bytes kept for reuse.
pub const POOL_MAX_BYTES: usize = 256 << 20;

fn pool() -> std::sync::MutexGuard<'static, Vec<(Vec<u64>, Reservation)>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives the pool's memory back to the budget when it runs short.
struct PoolReclaimer;

impl Reclaim for PoolReclaimer {
    fn cost(&self) -> u32 {
        0
    }

    fn reclaim(&self, want: u64) -> u64 {
        let mut got = 0;
        let freed: Vec<_> = {
            let mut p = pool();
            let mut out = Vec::new();
            while got < want {
                match p.pop() {
                    Some(e) => {
                        got += e.1.bytes();
                        out.push(e);
                    }
                    None => break,
                }
            }
            out
        };
        drop(freed);
        got
    }
}

fn register_pool_reclaimer() {
    static REG: OnceLock<Arc<dyn Reclaim>> = OnceLock::new();
    REG.get_or_init(|| {
        let r: Arc<dyn Reclaim> = Arc::new(PoolReclaimer);
        memory::global().add_reclaimer(Arc::downgrade(&r));
        r
    });
}

fn pool_take(words: usize) -> Option<(Vec<u64>, Reservation)> {
    if words * 8 < POOL_MIN_BYTES {
        return None;
    }
    let mut p = pool();
    // The smallest pooled buffer that fits, if it does not waste more than half of itself.
    let best = p
        .iter()
        .enumerate()
        .filter(|(_, (v, _))| v.capacity() >= words && v.capacity() <= words * 2)
        .min_by_key(|(_, (v, _))| v.capacity())
        .map(|(i, _)| i);
    best.map(|i| p.swap_remove(i))
}

fn pool_give(v: Vec<u64>, res: Reservation) {
    let bytes = v.capacity() * 8;
    if bytes < POOL_MIN_BYTES || !res.is_global() {
        return;
    }
    register_pool_reclaimer();
    let mut p = pool();
    let held: usize = p.iter().map(|b| b.0.capacity() * 8).sum();
    if p.len() < POOL_MAX_BUFFERS && held + bytes <= POOL_MAX_BYTES {
        p.push((v, res));
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Repr::Owned { words, res, .. } = &mut self.repr {
            let res = std::mem::replace(res, Reservation::empty());
            pool_give(std::mem::take(words), res);
        }
    }
}

impl Buffer {
    /// A zero-filled owned buffer of `len` bytes, reserved in the global budget before it is
    /// allocated (recycled from earlier chunks when possible). Waits for room under pressure and
    /// fails if the budget cannot make room.
    pub fn zeroed(len: usize) -> Result<Buffer> {
        Buffer::owned(len, true, |bytes| {
            memory::global().reserve(bytes, "chunk buffer")
        })
    }

    /// A zero-filled owned buffer of `len` bytes reserved in `budget` (the buffer pool only serves
    /// the global budget).
    pub fn zeroed_in(len: usize, budget: &memory::MemoryBudget) -> Result<Buffer> {
        if budget.same(memory::global()) {
            return Buffer::zeroed(len);
        }
        let words = len.div_ceil(8);
        let res = budget.reserve(words as u64 * 8, "chunk buffer")?;
        Ok(Buffer {
            repr: Repr::Owned {
                words: vec![0u64; words],
                len,
                res,
            },
        })
    }

    /// An owned buffer of `len` bytes whose contents are unspecified (a recycled buffer keeps its
    /// old bytes): for callers that overwrite every byte, such as reads. Saves zeroing a buffer
    /// that is about to be filled.
    pub fn for_overwrite(len: usize) -> Result<Buffer> {
        Buffer::owned(len, false, |bytes| {
            memory::global().reserve(bytes, "chunk buffer")
        })
    }

    /// An owned buffer of `len` bytes, recycled from the pool when one fits, otherwise reserved
    /// with `reserve` and allocated; zero-filled if `zero`.
    fn owned(
        len: usize,
        zero: bool,
        reserve: impl FnOnce(u64) -> Result<Reservation>,
    ) -> Result<Buffer> {
        let words = len.div_ceil(8);
        let (mut v, res) = match pool_take(words) {
            Some(e) => e,
            None => {
                let res = reserve(words as u64 * 8)?;
                let v: Vec<u64> = Vec::with_capacity(words);
                if words * 8 >= HUGE_PAGES_MIN_BYTES {
                    super::mmap::advise_huge_pages(v.as_ptr().cast(), words * 8);
                }
                (v, res)
            }
        };
        if zero {
            v.clear();
        }
        // Shrinks a recycled buffer, or zero-extends it (and a fresh one) to `words`. Fresh
        // pages cost a fault each on first touch (a 512 MiB result: ~0.5 s on one thread), so
        // large extensions are written by all workers.
        if words.saturating_sub(v.len()) * 8 >= PARALLEL_FILL_MIN_BYTES {
            use rayon::prelude::*;
            let more = words - v.len();
            v.par_extend(rayon::iter::repeat_n(0u64, more));
        } else {
            v.resize(words, 0);
        }
        Ok(Buffer {
            repr: Repr::Owned { words: v, len, res },
        })
    }

    /// An owned copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Result<Buffer> {
        let mut b = Buffer::for_overwrite(bytes.len())?;
        b.bytes_mut().copy_from_slice(bytes);
        Ok(b)
    }

    /// Wraps borrowed bytes without copying when they are 8-byte aligned, and copies otherwise.
    pub fn shared(bytes: Box<dyn SharedBytes>) -> Result<Buffer> {
        if bytes.bytes().as_ptr().align_offset(8) == 0 {
            Ok(Buffer {
                repr: Repr::Shared(bytes),
            })
        } else {
            Buffer::copy_from(bytes.bytes())
        }
    }

    /// Frees the buffer without recycling it into the pool: its memory and its reservation go
    /// back at once (used when reclaiming memory under pressure).
    pub fn discard(mut self) {
        if let Repr::Owned { words, res, .. } = &mut self.repr {
            drop(std::mem::take(words));
            drop(std::mem::replace(res, Reservation::empty()));
        }
    }

    /// True when the bytes are owned and reserved in `budget`.
    pub fn is_reserved_in(&self, budget: &memory::MemoryBudget) -> bool {
        matches!(&self.repr, Repr::Owned { res, .. } if res.is_in(budget))
    }

    /// True when the bytes are borrowed from a map or another owner (no copy was made).
    pub fn is_shared(&self) -> bool {
        matches!(self.repr, Repr::Shared(_))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Owned { words, len, .. } => &bytemuck::cast_slice(words)[..*len],
            Repr::Shared(s) => s.bytes(),
        }
    }

    /// The bytes, mutable. A shared buffer is first copied into owned storage; that copy's
    /// reservation is forced (it may pass the limit briefly), since the original it replaces is
    /// released right after.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if let Repr::Shared(s) = &self.repr {
            let src = s.bytes();
            let owned = Buffer::owned(src.len(), false, |b| {
                Ok(memory::global().reserve_forced(b, "chunk buffer"))
            })
            .map(|mut b| {
                b.bytes_mut().copy_from_slice(src);
                b
            });
            if let Ok(b) = owned {
                *self = b;
            }
        }
        match &mut self.repr {
            Repr::Owned { words, len, .. } => &mut bytemuck::cast_slice_mut(words)[..*len],
            Repr::Shared(_) => unreachable!("a forced reservation cannot fail"),
        }
    }

    /// The elements. Panics if the length is not a multiple of `T`'s size.
    pub fn as_slice<T: Element>(&self) -> &[T] {
        bytemuck::cast_slice(self.bytes())
    }

    /// The elements, mutable (copying a shared buffer first).
    pub fn as_mut_slice<T: Element>(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.bytes_mut())
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len())
            .field("shared", &self.is_shared())
            .finish()
    }
}
