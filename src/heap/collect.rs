//! The cycle collector: CPython's generational algorithm over the heap's tracked containers.
//!
//! A collection of generation *g* takes every tracked object in generations `0..=g` as the
//! candidate set and, as `gcmodule.c` does:
//! 1. `update_refs`: copies each candidate's reference count into `gc_refs`;
//! 2. `subtract_refs`: for every reference from one candidate to another, decrements the
//!    target's `gc_refs` — what remains counts references from outside the set (handles, older
//!    generations, frozen objects);
//! 3. `move_unreachable`: candidates with `gc_refs > 0` are roots; everything they reach is kept;
//!    the rest is unreachable;
//! 4. finalizers of unreachable objects run once (outside every lock, with the unreachable set
//!    kept alive meanwhile), then resurrection is checked by repeating 1–3 within the unreachable
//!    set: objects a finalizer made reachable again survive;
//! 5. the rest is freed together; references it held to survivors are released normally;
//! 6. survivors move to generation `g + 1` (generation 2 keeps its own).
//!
//! Automatic collections follow CPython 3.13: allocating a container counts toward generation 0
//! (freeing one counts back); when `count[0]` exceeds `threshold[0]` (700) the oldest generation
//! whose count exceeds its threshold is collected (10 younger collections each for generations 1
//! and 2), except that a full collection also waits until the objects promoted into generation 2
//! since the last full collection exceed 25 % of those that survived it.

use std::time::{Duration, Instant};

use std::cell::Cell;

use super::{Freed, Handle, Heap, ObjId, State, run_finalizer};

thread_local! {
    /// The heap (the address of its shared state) whose collection this thread is running, its
    /// finalizers and callbacks included; 0 for none.
    static COLLECTING: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as running a heap's collection until dropped, a panicking callback's
/// unwinding included, and then restores the mark it replaced: a finalizer of heap A may
/// collect heap B, which nests.
struct CollectingMark(usize);

impl Drop for CollectingMark {
    fn drop(&mut self) {
        COLLECTING.with(|c| c.set(self.0));
    }
}
use crate::error::{Error, Result};

/// Statistics of one generation (CPython's `gc.get_stats()`, plus bytes and pauses).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenStats {
    /// Collections of this generation.
    pub collections: u64,
    /// Objects freed by those collections.
    pub collected: u64,
    /// Objects found unreachable but not freeable (always 0: every object kind can be freed).
    pub uncollectable: u64,
    /// Bytes of memory (chunk data, strings) those collections freed.
    pub bytes_freed: u64,
    /// Total pause time.
    pub pause: Duration,
    /// Longest single pause.
    pub max_pause: Duration,
}

/// Start or end of a collection, as told to callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcPhase {
    /// Before the collection.
    Start,
    /// After it.
    Stop,
}

/// What callbacks receive (CPython's `gc.callbacks` info dict).
#[derive(Clone, Debug, PartialEq)]
pub struct GcEvent {
    /// Start or stop.
    pub phase: GcPhase,
    /// The generation collected.
    pub generation: usize,
    /// Objects freed (0 at start).
    pub collected: u64,
    /// Uncollectable objects (0 at start).
    pub uncollectable: u64,
    /// Pause so far (zero at start).
    pub pause: Duration,
}

const MARK_CANDIDATE: u8 = 1;
const MARK_REACHABLE: u8 = 2;
const MARK_GARBAGE: u8 = 3;

impl State {
    /// Steps 1–3 over `set` (objects marked `MARK_CANDIDATE`): returns the ids not reachable from
    /// outside the set; every object of `set` ends unmarked.
    fn unreachable_in(&mut self, set: &[ObjId]) -> Vec<ObjId> {
        for &id in set {
            let rc = self.rc(id);
            self.obj_mut(id).gc_refs = rc as i64;
        }
        // One scratch vector for referent lists (no allocation per object).
        let mut refs = Vec::new();
        for &id in set {
            refs.clear();
            self.obj(id).payload.for_each_referent(|r| refs.push(r));
            for &r in &refs {
                let t = self.obj_mut(r);
                if t.mark == MARK_CANDIDATE {
                    t.gc_refs -= 1;
                }
            }
        }
        let mut stack: Vec<ObjId> = set
            .iter()
            .copied()
            .filter(|&id| self.obj(id).gc_refs > 0)
            .collect();
        for &id in &stack {
            self.obj_mut(id).mark = MARK_REACHABLE;
        }
        while let Some(id) = stack.pop() {
            refs.clear();
            self.obj(id).payload.for_each_referent(|r| refs.push(r));
            for &r in &refs {
                let t = self.obj_mut(r);
                if t.mark == MARK_CANDIDATE {
                    t.mark = MARK_REACHABLE;
                    stack.push(r);
                }
            }
        }
        let out: Vec<ObjId> = set
            .iter()
            .copied()
            .filter(|&id| self.obj(id).mark == MARK_CANDIDATE)
            .collect();
        for &id in set {
            self.obj_mut(id).mark = 0;
        }
        out
    }

    /// Takes every object of `set` (all marked `MARK_GARBAGE`, and only they) out of its
    /// generation's list: one pass over each list holding some, instead of a `swap_remove` and
    /// a moved neighbour's update per object at random places.
    fn untrack_marked(&mut self, set: &[ObjId]) {
        let mut touched = [false; 4];
        for &id in set {
            if let Some((g, _)) = self.obj(id).track() {
                touched[g] = true;
            }
        }
        for (g, &t) in touched.iter().enumerate() {
            if !t {
                continue;
            }
            let mut list = std::mem::take(&mut self.gens[g]);
            let mut kept = 0;
            for i in 0..list.len() {
                let id = list[i];
                let o = self.obj_mut(id);
                if o.mark == MARK_GARBAGE {
                    o.set_track(None);
                } else {
                    o.set_track(Some((g, kept)));
                    list[kept] = id;
                    kept += 1;
                }
            }
            list.truncate(kept);
            self.gens[g] = list;
        }
    }

    fn mark_all(&mut self, set: &[ObjId], mark: u8) {
        for &id in set {
            self.obj_mut(id).mark = mark;
        }
    }

    /// The generation an automatic collection should collect now, if any.
    fn due_generation(&self) -> Option<usize> {
        if !self.enabled || self.threshold[0] == 0 || self.count[0] <= self.threshold[0] {
            return None;
        }
        for g in (0..3).rev() {
            if self.count[g] > self.threshold[g] {
                if g == 2 && self.long_lived_pending < self.long_lived_total / 4 {
                    continue;
                }
                return Some(g);
            }
        }
        Some(0)
    }
}

impl Heap {
    /// Collects generation `generation` (0, 1 or 2; 2 is a full collection) and returns the
    /// number of unreachable objects found (all of which are freed).
    pub fn collect(&self, generation: usize) -> Result<u64> {
        if generation > 2 {
            return Err(Error::Invalid(format!(
                "invalid generation {generation} (expected 0, 1 or 2)"
            )));
        }
        // A collection requested from a finalizer or callback of this heap's collection running
        // on this thread is absorbed by it (as in CPython); other threads wait their turn.
        if COLLECTING.with(Cell::get) == self.key() {
            return Ok(0);
        }
        let _one = self
            .inner
            .collecting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(self.collect_locked(generation))
    }

    /// Runs a collection if the thresholds say so (called after allocating a container).
    pub(crate) fn maybe_collect(&self) {
        if self.state().due_generation().is_none() {
            return;
        }
        // A collection already running (maybe on this thread, in a finalizer) absorbs this one.
        let Ok(_one) = self.inner.collecting.try_lock() else {
            return;
        };
        let due = self.state().due_generation();
        if let Some(g) = due {
            self.collect_locked(g);
        }
    }

    fn collect_locked(&self, generation: usize) -> u64 {
        let _mark = CollectingMark(COLLECTING.with(|c| c.replace(self.key())));
        self.collect_inner(generation)
    }

    /// This heap's identity for [`COLLECTING`]: the address of its shared state.
    fn key(&self) -> usize {
        std::sync::Arc::as_ptr(&self.inner) as usize
    }

    fn collect_inner(&self, generation: usize) -> u64 {
        self.run_callbacks(&GcEvent {
            phase: GcPhase::Start,
            generation,
            collected: 0,
            uncollectable: 0,
            pause: Duration::ZERO,
        });
        let start = Instant::now();
        let mut st = self.state();
        let young: Vec<ObjId> = (0..=generation).flat_map(|g| st.gens[g].clone()).collect();
        st.mark_all(&young, super::collect::MARK_CANDIDATE);
        let mut unreachable = st.unreachable_in(&young);
        // With finalizers to run, the tags of the young objects' slots, taken before the lock is
        // released: a slot freed and reused while finalizers ran holds a new, unexamined object
        // that must not be promoted with the survivors. `None` while the lock is held throughout.
        let mut tags: Option<Vec<u32>> = None;

        // Finalizers: run once, with the unreachable set held alive meanwhile.
        let finalize: Vec<_> = unreachable
            .iter()
            .filter_map(|&id| {
                let o = st.obj_mut(id);
                if o.finalized || !o.has_finalizer {
                    return None;
                }
                o.has_finalizer = false;
                o.finalized = true;
                let f = st.finalizers.remove(&id).expect("a flagged finalizer");
                Some((id, f))
            })
            .collect();
        if !finalize.is_empty() {
            tags = Some(young.iter().map(|&id| st.slots[id as usize].tag).collect());
            for &id in &unreachable {
                st.incref(id);
            }
            let handles: Vec<_> = finalize
                .into_iter()
                .map(|(id, f)| {
                    st.incref(id);
                    (
                        Handle {
                            heap: self.clone(),
                            id,
                        },
                        f,
                    )
                })
                .collect();
            drop(st);
            for (h, f) in handles {
                run_finalizer(f, &h);
            }
            st = self.state();
            for &id in &unreachable {
                st.counts.decref(id);
            }
            // Resurrection: whatever is now referenced from outside the set survives.
            st.mark_all(&unreachable, MARK_CANDIDATE);
            unreachable = st.unreachable_in(&unreachable);
        }

        // Free the garbage: take every object out, then release what it held outside the set.
        let mut freed = Freed::default();
        st.mark_all(&unreachable, MARK_GARBAGE);
        st.untrack_marked(&unreachable);
        let mut payloads = Vec::with_capacity(unreachable.len());
        st.free.reserve(unreachable.len());
        for &id in &unreachable {
            payloads.push(st.remove(id, &mut freed));
        }
        let collected = unreachable.len() as u64;
        let mut refs = Vec::new();
        for p in &payloads {
            refs.clear();
            p.for_each_referent(|r| refs.push(r));
            for &r in &refs {
                // Referents in the garbage are gone already (their slots are empty).
                if st.slots[r as usize]
                    .obj
                    .as_ref()
                    .is_some_and(|o| o.mark != MARK_GARBAGE)
                {
                    st.decref(r, &mut freed);
                }
            }
        }
        // The few payloads those releases freed join the garbage's (not the other way round:
        // moving a million payloads into a fresh vector cost 12 ms of copying and first touch).
        payloads.append(&mut freed.payloads);
        freed.payloads = payloads;
        // Bytes include leaves the garbage held alone (its chunks), freed in the same step.
        let bytes = freed.bytes;

        // Survivors are promoted; counts and long-lived bookkeeping as in CPython.
        let target = (generation + 1).min(2);
        let mut promoted = 0u64;
        if let Some(tags) = tags {
            // Finalizers ran unlocked: only the young objects still in their slots, and still in
            // a young generation, are survivors.
            for (&id, &tag) in young.iter().zip(&tags) {
                let slot = &st.slots[id as usize];
                let live = slot.tag == tag
                    && slot
                        .obj
                        .as_ref()
                        .is_some_and(|o| o.track().is_some_and(|(g, _)| g <= generation));
                if live {
                    if st.obj(id).track().map(|t| t.0) != Some(target) {
                        promoted += 1;
                    }
                    st.move_to(id, target);
                }
            }
        } else {
            // The lock was held throughout: the young generations now hold exactly the
            // survivors. The garbage left them above; freeing it may also free a young survivor
            // whose only holder was an older object that only the garbage held (a root here,
            // since references from older generations are not subtracted), but `untrack` took
            // that one out of its list. Append the lists whole.
            for g in 0..=generation {
                if g != target {
                    let list = std::mem::take(&mut st.gens[g]);
                    promoted += list.len() as u64;
                    for id in list {
                        st.track(id, target);
                    }
                }
            }
        }
        if generation + 1 < 3 {
            st.count[generation + 1] += 1;
        }
        for g in 0..=generation {
            st.count[g] = 0;
        }
        if generation == 1 {
            st.long_lived_pending += promoted;
        } else if generation == 2 {
            st.long_lived_pending = 0;
            st.long_lived_total = st.gens[2].len() as u64;
        }
        let pause = start.elapsed();
        let s = &mut st.stats[generation];
        s.collections += 1;
        s.collected += collected;
        s.bytes_freed += bytes;
        s.pause += pause;
        s.max_pause = s.max_pause.max(pause);
        drop(st);
        freed.finish(self);
        self.run_callbacks(&GcEvent {
            phase: GcPhase::Stop,
            generation,
            collected,
            uncollectable: 0,
            pause,
        });
        collected
    }

    fn run_callbacks(&self, e: &GcEvent) {
        let cbs = self
            .inner
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for cb in cbs {
            cb(e);
        }
    }

    /// Registers a callback told about the start and stop of every collection.
    ///
    /// A callback that owns a clone of this heap keeps the heap (and its spill directory) alive
    /// until [`clear_callbacks`](Self::clear_callbacks) is called, as a `gc.callbacks` entry
    /// holding a reference would in CPython.
    pub fn add_callback(&self, cb: impl Fn(&GcEvent) + Send + Sync + 'static) {
        self.inner
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(std::sync::Arc::new(cb));
    }

    /// Removes every registered callback (`gc.callbacks.clear()`), dropping what they own.
    pub fn clear_callbacks(&self) {
        let cbs = std::mem::take(
            &mut *self
                .inner
                .callbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        drop(cbs);
    }

    /// Turns automatic collection on.
    pub fn enable(&self) {
        self.state().enabled = true;
    }

    /// Turns automatic collection off (explicit [`collect`](Self::collect) still works).
    pub fn disable(&self) {
        self.state().enabled = false;
    }

    /// True if automatic collection is on.
    pub fn is_enabled(&self) -> bool {
        self.state().enabled
    }

    /// The collection counts `(count0, count1, count2)`.
    pub fn get_count(&self) -> [u64; 3] {
        self.state().count
    }

    /// The thresholds (default `(700, 10, 10)`).
    pub fn get_threshold(&self) -> [u64; 3] {
        self.state().threshold
    }

    /// Sets the thresholds; a zero `threshold[0]` disables automatic collection.
    pub fn set_threshold(&self, threshold: [u64; 3]) {
        self.state().threshold = threshold;
    }

    /// Per-generation statistics.
    pub fn get_stats(&self) -> [GenStats; 3] {
        self.state().stats.clone()
    }

    /// Moves every tracked object into the permanent generation, which collections ignore.
    pub fn freeze(&self) {
        let mut st = self.state();
        for g in 0..3 {
            for id in std::mem::take(&mut st.gens[g]) {
                st.obj_mut(id).set_track(None);
                st.track(id, 3);
            }
        }
        st.count = [0; 3];
    }

    /// Moves the permanent generation back into the oldest generation.
    pub fn unfreeze(&self) {
        let mut st = self.state();
        for id in std::mem::take(&mut st.gens[3]) {
            st.obj_mut(id).set_track(None);
            st.track(id, 2);
        }
    }

    /// Objects in the permanent generation.
    pub fn get_freeze_count(&self) -> usize {
        self.state().gens[3].len()
    }

    /// Number of tracked objects in each generation `(gen0, gen1, gen2)`.
    pub fn generation_sizes(&self) -> [usize; 3] {
        let st = self.state();
        [st.gens[0].len(), st.gens[1].len(), st.gens[2].len()]
    }
}
