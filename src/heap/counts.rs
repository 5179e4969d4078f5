//! Reference counts in storage that never moves, so that handles count without the heap's lock.
//!
//! The slots live in a `Vec` behind the state mutex and move when it grows; the counts live
//! here instead, in segments allocated once and never freed or moved (segment `k` holds
//! `FIRST << k` counts, so 23 segments cover every `u32` id and a heap of `n` objects holds at
//! most about `2n` counts).
//!
//! # The protocol
//! - Under the state lock, counts change only by atomic read-modify-writes (never a load and a
//!   store), so they compose with the lock-free changes below.
//! - A [`Handle`](super::Handle) clone increments without the lock: the handle it is cloned
//!   from is counted, so the count is at least 1 and the slot cannot be freed meanwhile.
//! - A handle drop decrements without the lock only while the count is above 1 (a
//!   compare-and-swap that cannot reach zero); the decrement that may reach zero takes the lock,
//!   so only code holding the lock ever frees an object.
//! - The collector reads counts under the lock while handles keep changing them. A count it reads
//!   counts every handle alive at that moment, and a handle to an object can only be made from a
//!   counted handle to it (a clone) or under the lock (taken from a container, a weak upgrade),
//!   so an object some handle reaches is never judged unreachable; a handle dropped after its
//!   count was read only makes the collector keep garbage one collection longer.
//! - [`Counts::set`] is a plain store, outside the chain of read-modify-writes: it is only used
//!   on a count no handle holds (a fresh slot, or a count of 0 that a finalizer's handle will
//!   own). Payloads are only touched under the state lock, so the orderings below are more
//!   than correctness needs; they are kept so that a count alone orders what its holders did.
//! - A handle must not be dropped while its thread holds the state lock: a last reference
//!   takes the lock (and deadlocks), where any drop used to. No code does so.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::object::ObjId;

/// Counts in segment 0; segment `k` holds `FIRST << k`.
const FIRST: usize = 1024;
/// Enough segments for every `u32` id: id `u32::MAX` falls in segment 22.
const SEGMENTS: usize = 23;

/// One atomic reference count per slot.
pub(crate) struct Counts {
    segments: [OnceLock<Box<[AtomicUsize]>>; SEGMENTS],
}

/// The segment holding `id`'s count and its position there.
fn locate(id: ObjId) -> (usize, usize) {
    let id = id as usize;
    let j = id / FIRST + 1;
    let k = (usize::BITS - 1 - j.leading_zeros()) as usize;
    (k, id - FIRST * ((1 << k) - 1))
}

impl Counts {
    pub(crate) fn new() -> Counts {
        Counts {
            segments: [const { OnceLock::new() }; SEGMENTS],
        }
    }

    /// The count of slot `id`, which [`ensure`](Self::ensure) has made room for.
    #[inline]
    pub(crate) fn get(&self, id: ObjId) -> &AtomicUsize {
        let (k, i) = locate(id);
        &self.segments[k].get().expect("a count for every slot")[i]
    }

    /// Makes room for slot `id`'s count (called under the state lock as slots are added).
    pub(crate) fn ensure(&self, id: ObjId) {
        let (k, _) = locate(id);
        self.segments[k].get_or_init(|| {
            std::iter::repeat_with(|| AtomicUsize::new(0))
                .take(FIRST << k)
                .collect()
        });
    }

    /// Adds a reference.
    #[inline]
    pub(crate) fn incref(&self, id: ObjId) {
        // Relaxed, as `Arc::clone`: a new reference is made from an existing one, which already
        // orders everything the new holder may see.
        let old = self.get(id).fetch_add(1, Ordering::Relaxed);
        // A count this high means references are leaking without bound (as `Arc`, abort
        // rather than wrap to a count that frees a live object).
        if old > isize::MAX as usize {
            std::process::abort();
        }
    }

    /// Removes a reference unless it is the last one; false (and no change) if it is, so that
    /// the caller takes the lock to release it.
    #[inline]
    pub(crate) fn decref_unless_last(&self, id: ObjId) -> bool {
        let c = self.get(id);
        let mut cur = c.load(Ordering::Relaxed);
        while cur > 1 {
            // Release: what this holder did with the object happens before whoever frees it
            // (who decrements with `AcqRel` under the lock).
            match c.compare_exchange_weak(cur, cur - 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Removes a reference (under the lock); returns the count left.
    #[inline]
    pub(crate) fn decref(&self, id: ObjId) -> usize {
        self.get(id).fetch_sub(1, Ordering::AcqRel) - 1
    }

    /// The count now.
    #[inline]
    pub(crate) fn load(&self, id: ObjId) -> usize {
        self.get(id).load(Ordering::Acquire)
    }

    /// Sets a fresh slot's count (under the lock; no handle to the slot exists).
    pub(crate) fn set(&self, id: ObjId, n: usize) {
        self.get(id).store(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_tile_the_ids_without_gaps_or_overlap() {
        let mut next = (0, 0);
        for id in 0..(FIRST * 40) as ObjId {
            assert_eq!(locate(id), next, "id {id}");
            next = if next.1 + 1 == FIRST << next.0 {
                (next.0 + 1, 0)
            } else {
                (next.0, next.1 + 1)
            };
        }
        let (k, i) = locate(ObjId::MAX);
        assert!(k < SEGMENTS && i < FIRST << k);
    }

    #[test]
    fn the_last_reference_is_left_to_the_locked_path() {
        let c = Counts::new();
        c.ensure(5000);
        c.set(5000, 2);
        assert!(c.decref_unless_last(5000));
        assert!(!c.decref_unless_last(5000));
        assert_eq!(c.load(5000), 1);
        assert_eq!(c.decref(5000), 0);
    }
}
