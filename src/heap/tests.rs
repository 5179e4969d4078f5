//! Heap and collector tests: exact live-object and finalizer counts after every step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;
use crate::memory::MemoryBudget;

fn heap() -> Heap {
    let h = Heap::with_config(&HeapConfig {
        budget: Some(MemoryBudget::new(1 << 30)),
        temp_dir: None,
    })
    .unwrap();
    h.disable(); // tests call collect() themselves unless they test thresholds
    h
}

/// Attaches a finalizer that counts its runs.
fn counted(h: &Handle) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    h.heap().set_finalizer(
        h,
        Box::new(move |_| {
            n2.fetch_add(1, Ordering::SeqCst);
        }),
    );
    n
}

#[test]
fn refcounts_free_acyclic_garbage_at_once() {
    let hp = heap();
    let a = hp.int(1);
    let b = hp.str("x");
    let l = hp.list(&[&a, &b, &a]);
    assert_eq!(hp.live_objects(), 3);
    assert_eq!(a.refcount(), 3); // the handle and two list slots
    drop(a);
    drop(b);
    assert_eq!(hp.live_objects(), 3, "the list keeps its items alive");
    let fl = counted(&l);
    drop(l);
    assert_eq!(
        hp.live_objects(),
        0,
        "dropping the list frees it and its items"
    );
    assert_eq!(fl.load(Ordering::SeqCst), 1);
    assert_eq!(hp.get_stats()[2].collections, 0, "no collection was needed");
}

#[test]
fn long_chains_free_without_recursion() {
    let hp = heap();
    let mut head = hp.list(&[]);
    for _ in 0..200_000 {
        head = hp.list(&[&head]);
    }
    assert_eq!(hp.live_objects(), 200_001);
    drop(head);
    assert_eq!(hp.live_objects(), 0);
}

#[test]
fn self_cycle_needs_the_collector() {
    let hp = heap();
    let l = hp.list(&[]);
    hp.list_append(&l, &l).unwrap();
    let f = counted(&l);
    let w = l.downgrade();
    drop(l);
    assert_eq!(hp.live_objects(), 1, "a self-cycle survives refcounting");
    assert!(!w.is_gone());
    assert_eq!(hp.collect(2).unwrap(), 1);
    assert_eq!(hp.live_objects(), 0);
    assert_eq!(f.load(Ordering::SeqCst), 1);
    assert!(
        w.is_gone(),
        "weak handles to collected objects read as gone"
    );
}

#[test]
fn rings_and_dict_cycles_are_collected_with_their_payloads() {
    let hp = heap();
    // A ring of 10 lists, each also holding a leaf.
    let nodes: Vec<Handle> = (0..10)
        .map(|i| {
            let leaf = hp.int(i);
            hp.list(&[&leaf])
        })
        .collect();
    for i in 0..10 {
        hp.list_append(&nodes[i], &nodes[(i + 1) % 10]).unwrap();
    }
    // A cycle through dicts holding a chunk of data.
    let chunk = hp.chunk(hp.alloc_buffer(1 << 20).unwrap(), true).unwrap();
    let d1 = hp.dict(&[("data", &chunk)]);
    let d2 = hp.dict(&[("peer", &d1)]);
    hp.dict_set(&d1, "peer", &d2).unwrap();
    assert_eq!(hp.live_objects(), 23);
    let used = hp.budget().used();
    assert!(used >= 1 << 20);
    drop((nodes, chunk, d1, d2));
    assert_eq!(
        hp.live_objects(),
        23,
        "only cycles remain, nothing freed yet"
    );
    // As in CPython, the count is of tracked containers (10 ring lists + 2 dicts); the chunk and
    // the ring's leaves are untracked and go by refcount as the cycles are broken.
    assert_eq!(hp.collect(2).unwrap(), 12);
    assert_eq!(hp.live_objects(), 0, "the ring's leaves went by refcount");
    assert_eq!(
        hp.budget().used(),
        used - (1 << 20),
        "the chunk's memory was released"
    );
    let s = hp.get_stats()[2].clone();
    assert_eq!(s.collections, 1);
    assert_eq!(s.collected, 12);
    assert_eq!(s.bytes_freed, 1 << 20);
}

#[test]
fn cycles_reachable_from_outside_survive() {
    let hp = heap();
    let a = hp.list(&[]);
    let b = hp.list(&[&a]);
    hp.list_append(&a, &b).unwrap();
    let holder = hp.dict(&[("a", &a)]);
    drop((a, b));
    assert_eq!(hp.collect(2).unwrap(), 0);
    assert_eq!(hp.live_objects(), 3);
    // Through an older generation: the holder is promoted, then the cycle is collected young.
    assert_eq!(hp.generation_sizes(), [0, 0, 3]);
    let c = hp.list(&[]);
    hp.list_append(&c, &c).unwrap();
    hp.dict_set(&holder, "c", &c).unwrap();
    drop(c);
    assert_eq!(
        hp.collect(0).unwrap(),
        0,
        "referenced from generation 2: not garbage"
    );
    drop(holder);
    assert_eq!(
        hp.live_objects(),
        3,
        "the holder went by refcount; the two cycles remain"
    );
    assert_eq!(hp.collect(2).unwrap(), 3);
    assert_eq!(hp.live_objects(), 0);
}

#[test]
fn finalizer_runs_once_and_resurrection_survives() {
    let hp = heap();
    let keep = hp.list(&[]);
    let a = hp.list(&[]);
    hp.list_append(&a, &a).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let (r2, keep2) = (runs.clone(), keep.clone());
    hp.set_finalizer(
        &a,
        Box::new(move |me| {
            r2.fetch_add(1, Ordering::SeqCst);
            keep2.heap().list_append(&keep2, me).unwrap(); // resurrect
        }),
    );
    drop(keep2_holder(&keep));
    let w = a.downgrade();
    drop(a);
    assert_eq!(hp.collect(2).unwrap(), 0, "resurrected by its finalizer");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!w.is_gone());
    // Unreachable again: collected now, and the finalizer does not run a second time.
    hp.clear(&keep).unwrap();
    assert_eq!(hp.collect(2).unwrap(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(w.is_gone());
    drop(keep);
    assert_eq!(
        hp.live_objects(),
        0,
        "the finalizer's captured handle was released with it"
    );
}

fn keep2_holder(h: &Handle) -> Handle {
    h.clone()
}

#[test]
fn refcount_finalizer_can_resurrect_too() {
    let hp = heap();
    let keep = hp.list(&[]);
    let a = hp.int(5);
    let k = keep.clone();
    hp.set_finalizer(
        &a,
        Box::new(move |me| k.heap().list_append(&k, me).unwrap()),
    );
    drop(a);
    assert_eq!(hp.len(&keep), 1);
    let back = hp.items(&keep).pop().unwrap();
    assert_eq!(hp.as_int(&back), Some(5));
}

#[test]
fn thresholds_trigger_at_the_documented_counts() {
    let hp = heap();
    hp.enable();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    hp.add_callback(move |e| e2.lock().unwrap().push((e.phase, e.generation)));
    let mut keep = Vec::new();
    for _ in 0..700 {
        keep.push(hp.list(&[]));
    }
    assert_eq!(hp.get_count(), [700, 0, 0]);
    assert!(
        events.lock().unwrap().is_empty(),
        "700 is not above the threshold"
    );
    keep.push(hp.list(&[]));
    assert_eq!(
        *events.lock().unwrap(),
        vec![(GcPhase::Start, 0), (GcPhase::Stop, 0)]
    );
    assert_eq!(hp.get_count(), [0, 1, 0]);
    assert_eq!(hp.generation_sizes(), [0, 701, 0]);
    // Ten more young collections bring count1 to 11 (> 10); the next trigger collects
    // generation 1 instead.
    for _ in 0..10 {
        for _ in 0..701 {
            keep.push(hp.list(&[]));
        }
    }
    assert_eq!(hp.get_stats()[0].collections, 11);
    assert_eq!(hp.get_stats()[1].collections, 0);
    assert_eq!(hp.get_count(), [0, 11, 0]);
    for _ in 0..701 {
        keep.push(hp.list(&[]));
    }
    assert_eq!(hp.get_stats()[0].collections, 11);
    assert_eq!(hp.get_stats()[1].collections, 1);
    assert_eq!(hp.get_count(), [0, 0, 1]);
    assert_eq!(hp.generation_sizes(), [0, 0, 12 * 701]);
    // Freeing a container counts back.
    let extra = hp.list(&[]);
    assert_eq!(hp.get_count()[0], 1);
    drop(extra);
    assert_eq!(hp.get_count()[0], 0);
    hp.set_threshold([5, 2, 2]);
    assert_eq!(hp.get_threshold(), [5, 2, 2]);
    hp.disable();
    for _ in 0..20 {
        keep.push(hp.list(&[]));
    }
    assert_eq!(
        hp.get_stats()[0].collections,
        11,
        "disabled: no automatic collection"
    );
}

#[test]
fn full_collections_wait_for_25_percent_new_long_lived_objects() {
    let hp = heap();
    hp.set_threshold([1, 0, 0]);
    let mut keep: Vec<Handle> = (0..100).map(|_| hp.list(&[])).collect();
    hp.collect(2).unwrap(); // 100 long-lived objects
    let full = hp.get_stats()[2].collections;
    hp.enable();
    // Each automatic collection now wants generation 2 (counts above 0), but only 1 object is
    // promoted per gen-1 collection: a full collection must wait for 25 of them.
    let mut fulls = Vec::new();
    for i in 0..60 {
        keep.push(hp.list(&[]));
        keep.push(hp.list(&[]));
        fulls.push((i, hp.get_stats()[2].collections - full));
    }
    let first_full = fulls.iter().find(|f| f.1 > 0).map(|f| f.0).unwrap();
    assert!(
        (10..=30).contains(&first_full),
        "first full collection at step {first_full}"
    );
    assert!(hp.get_stats()[1].collections > 5);
}

#[test]
fn freeze_hides_objects_from_collections() {
    let hp = heap();
    let a = hp.list(&[]);
    hp.list_append(&a, &a).unwrap();
    drop(a);
    hp.freeze();
    assert_eq!(hp.get_freeze_count(), 1);
    assert_eq!(hp.collect(2).unwrap(), 0, "frozen garbage is not examined");
    hp.unfreeze();
    assert_eq!(hp.get_freeze_count(), 0);
    assert_eq!(hp.collect(2).unwrap(), 1);
}

#[test]
fn referrers_and_referents() {
    let hp = heap();
    let x = hp.int(42);
    let inner = hp.list(&[&x, &x]);
    let outer = hp.dict(&[("rows", &inner)]);
    let refs = hp.get_referrers(&x);
    assert_eq!(refs.len(), 1);
    assert!(refs[0].same(&inner));
    assert_eq!(hp.get_referents(&inner).len(), 2);
    assert!(hp.get_referents(&outer)[0].same(&inner));
    assert!(hp.get_referrers(&outer).is_empty());
}

#[test]
fn why_alive_names_the_path_to_an_outside_handle() {
    let hp = heap();
    let leaf = hp.int(7);
    let l = hp.list(&[&leaf]);
    let d = hp.dict(&[("k", &l)]);
    drop(l);
    let chain = hp.why_alive(&leaf);
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert!(
        chain[0].starts_with("list#") && chain[0].ends_with("at [0]"),
        "{chain:?}"
    );
    assert!(
        chain[1].starts_with("dict#") && chain[1].contains("[\"k\"]"),
        "{chain:?}"
    );
    assert!(
        chain[2].contains("held by 1 handle(s) outside the heap"),
        "{chain:?}"
    );
    drop(d);
    let chain = hp.why_alive(&leaf);
    assert_eq!(
        chain,
        vec![format!(
            "int#{} is not reachable from outside the heap (garbage awaiting collection)",
            leaf.id()
        )]
    );
    let extra = leaf.clone();
    assert_eq!(hp.why_alive(&leaf).len(), 1);
    drop(extra);
}

#[test]
fn chunks_evict_spill_reload_and_clean_up() {
    let budget = MemoryBudget::new(64 << 20);
    let dir = tempfile::tempdir().unwrap();
    let hp = Heap::with_config(&HeapConfig {
        budget: Some(budget.clone()),
        temp_dir: Some(dir.path().to_path_buf()),
    })
    .unwrap();
    let mut data = hp.alloc_buffer(4096).unwrap();
    data.as_mut_slice::<f64>()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as f64);
    let c = hp.chunk(data, true).unwrap();
    assert_eq!(hp.chunk_state(&c).unwrap(), "resident");
    assert_eq!(hp.release_chunk(&c).unwrap(), 4096);
    assert_eq!(hp.chunk_state(&c).unwrap(), "spilled");
    assert_eq!(hp.stats().spill_files, 1);
    let sum = hp
        .with_chunk(&c, |b| b.as_slice::<f64>().iter().sum::<f64>())
        .unwrap();
    assert_eq!(sum, (0..512).sum::<i32>() as f64);
    assert_eq!(hp.chunk_state(&c).unwrap(), "resident");
    hp.release_chunk(&c).unwrap();
    drop(c);
    assert_eq!(
        std::fs::read_dir(hp.spill_dir()).unwrap().count(),
        0,
        "spill files are deleted with their chunk"
    );
    assert_eq!(hp.stats().chunk_bytes_spilled, 0);
    drop(hp);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the spill directory goes with the heap"
    );
    assert_eq!(budget.used(), 0, "every reservation was returned");
}

#[test]
fn budget_pressure_spills_dirty_chunks_instead_of_failing() {
    let budget = MemoryBudget::new(10 << 20);
    budget.set_stall_timeout(std::time::Duration::from_millis(200));
    let hp = Heap::with_config(&HeapConfig {
        budget: Some(budget.clone()),
        temp_dir: None,
    })
    .unwrap();
    // 16 MiB of dirty chunks under a 10 MiB budget: allocating the later ones makes the heap
    // spill the earlier ones (least recently used first) instead of failing.
    let mut chunks = Vec::new();
    for i in 0..8u8 {
        let mut b = hp.alloc_buffer(2 << 20).unwrap();
        b.bytes_mut().fill(i);
        chunks.push(hp.chunk(b, true).unwrap());
        assert!(budget.used() <= 10 << 20);
    }
    let s = hp.stats();
    assert!(s.chunk_bytes_spilled >= 6 << 20, "{s:?}");
    assert!(budget.peak() <= 10 << 20);
    assert_eq!(hp.chunk_state(&chunks[0]).unwrap(), "spilled");
    for (i, c) in chunks.iter().enumerate() {
        let ok = hp
            .with_chunk(c, |b| b.bytes().iter().all(|&x| x == i as u8))
            .unwrap();
        assert!(ok, "chunk {i} survived its spill");
    }
    // A request that can never fit fails with the budget, the request and the holders named.
    let e = budget
        .reserve(11 << 20, "sort run")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("10.0 MiB") && e.contains("sort run") && e.contains("chunk buffer"),
        "{e}"
    );
    drop(chunks);
    assert_eq!(budget.used(), 0);
    assert_eq!(std::fs::read_dir(hp.spill_dir()).unwrap().count(), 0);
}

#[test]
fn clean_chunks_are_evicted_and_reread() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let p = p.to_str().unwrap();
    let spec = crate::generate::GenSpec {
        shape: vec![4096],
        dtype: crate::DType::F64,
        dist: crate::generate::Dist::Arange,
        seed: 0,
        options: Default::default(),
    };
    crate::generate::generate(p, &spec).unwrap();
    let src: Arc<dyn ChunkSource> = Arc::from(crate::formats::open(p).unwrap());
    let hp = heap();
    let c = hp.chunk_from_source(src.clone(), 0).unwrap();
    let arr = hp.array(src);
    assert_eq!(hp.release_chunk(&c).unwrap(), 4096 * 8);
    assert_eq!(hp.chunk_state(&c).unwrap(), "evicted");
    assert_eq!(
        hp.stats().spill_files,
        0,
        "clean chunks are not written anywhere"
    );
    let sum = hp
        .with_chunk(&c, |b| b.as_slice::<f64>().iter().sum::<f64>())
        .unwrap();
    assert_eq!(sum, (4095.0 * 4096.0) / 2.0);
    assert_eq!(hp.array_source(&arr).unwrap().info().shape, vec![4096]);
}

#[test]
fn threads_share_the_heap() {
    let hp = heap();
    let shared = hp.list(&[]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (hp, shared) = (hp.clone(), shared.clone());
            s.spawn(move || {
                for i in 0..2000 {
                    let x = hp.int(t * 10_000 + i);
                    let l = hp.list(&[&x]);
                    hp.list_append(&l, &l).unwrap(); // garbage cycle
                    if i % 10 == 0 {
                        hp.list_append(&shared, &x).unwrap();
                    }
                    if i % 500 == 0 {
                        hp.collect(0).unwrap();
                    }
                }
            });
        }
    });
    hp.collect(2).unwrap();
    assert_eq!(hp.len(&shared), 800);
    assert_eq!(
        hp.live_objects(),
        801,
        "only the shared list and its 800 ints remain"
    );
    drop(shared);
    assert_eq!(hp.live_objects(), 0);
}

#[test]
fn stats_are_monotone_and_count_kinds() {
    let hp = heap();
    let mut last = hp.get_stats();
    for round in 0..5 {
        for _ in 0..round * 3 {
            let l = hp.list(&[]);
            hp.list_append(&l, &l).unwrap();
        }
        hp.collect(round % 3).unwrap();
        let now = hp.get_stats();
        for g in 0..3 {
            assert!(now[g].collections >= last[g].collections);
            assert!(now[g].collected >= last[g].collected);
            assert!(now[g].pause >= last[g].pause);
        }
        last = now;
    }
    let _a = hp.str("s");
    let _b = hp.list(&[]);
    let s = hp.stats();
    assert_eq!(s.objects, 2);
    assert_eq!(s.by_kind.get(&Kind::Str), Some(&1));
    assert_eq!(s.tracked, 1);
}

// ---- Model-based property test -------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Alloc(bool),
    Clone(usize),
    Drop(usize),
    Link(usize, usize),
    Unlink(usize),
    Collect(usize),
    Spill(usize),
    Reload(usize),
    /// Attaches a finalizer (which only counts its run), so that collections take the path
    /// that runs finalizers with the lock released.
    Finalize(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(Op::Alloc),
        1 => any::<usize>().prop_map(Op::Clone),
        3 => any::<usize>().prop_map(Op::Drop),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => any::<usize>().prop_map(Op::Unlink),
        1 => (0usize..3).prop_map(Op::Collect),
        1 => any::<usize>().prop_map(Op::Spill),
        1 => any::<usize>().prop_map(Op::Reload),
        1 => any::<usize>().prop_map(Op::Finalize),
    ]
}

/// The reference model: objects with edges; `handles` are the external references.
#[derive(Default)]
struct Model {
    edges: Vec<Vec<usize>>, // per model object, its referents (lists) — empty for chunks
    alive: Vec<bool>,
    is_list: Vec<bool>,
    handles: Vec<usize>, // model ids held by external handles
}

impl Model {
    fn rc(&self, id: usize) -> usize {
        let internal: usize = (0..self.edges.len())
            .filter(|&o| self.alive[o])
            .map(|o| self.edges[o].iter().filter(|&&r| r == id).count())
            .sum();
        internal + self.handles.iter().filter(|&&h| h == id).count()
    }

    /// Refcount semantics: free everything whose count is zero, repeatedly.
    fn refcount_sweep(&mut self) {
        loop {
            let dead: Vec<usize> = (0..self.alive.len())
                .filter(|&o| self.alive[o] && self.rc(o) == 0)
                .collect();
            if dead.is_empty() {
                return;
            }
            for d in dead {
                self.alive[d] = false;
            }
        }
    }

    /// What external handles reach.
    fn reachable(&self) -> Vec<bool> {
        let mut reach = vec![false; self.alive.len()];
        let mut stack: Vec<usize> = self.handles.clone();
        while let Some(o) = stack.pop() {
            if !reach[o] {
                reach[o] = true;
                stack.extend(self.edges[o].iter().copied());
            }
        }
        reach
    }

    fn live(&self) -> usize {
        self.alive.iter().filter(|&&a| a).count()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn heap_matches_reachability_model(ops in prop::collection::vec(op(), 1..80)) {
        let hp = heap();
        let mut m = Model::default();
        let mut hs: Vec<(usize, Handle)> = Vec::new(); // (model id, handle)
        let mut objs: Vec<Option<WeakHandle>> = Vec::new();
        // (model id, runs of a finalizer attached to it), in the order attached.
        let mut runs: Vec<(usize, Arc<AtomicUsize>)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc(list) => {
                    let h = if list { hp.list(&[]) } else { hp.chunk(hp.alloc_buffer(64).unwrap(), true).unwrap() };
                    let id = m.alive.len();
                    m.alive.push(true);
                    m.edges.push(Vec::new());
                    m.is_list.push(list);
                    m.handles.push(id);
                    objs.push(Some(h.downgrade()));
                    hs.push((id, h));
                }
                Op::Clone(i) if !hs.is_empty() => {
                    let (id, h) = &hs[i % hs.len()];
                    m.handles.push(*id);
                    let c = h.clone();
                    hs.push((*id, c));
                }
                Op::Drop(i) if !hs.is_empty() => {
                    let (id, h) = hs.swap_remove(i % hs.len());
                    let p = m.handles.iter().position(|&x| x == id).unwrap();
                    m.handles.swap_remove(p);
                    drop(h);
                    m.refcount_sweep();
                }
                Op::Link(a, b) if !hs.is_empty() => {
                    let (ia, ha) = &hs[a % hs.len()];
                    let (ib, hb) = &hs[b % hs.len()];
                    if m.is_list[*ia] {
                        hp.list_append(ha, hb).unwrap();
                        m.edges[*ia].push(*ib);
                    }
                }
                Op::Unlink(a) if !hs.is_empty() => {
                    let (ia, ha) = &hs[a % hs.len()];
                    if m.is_list[*ia] && !m.edges[*ia].is_empty() {
                        drop(hp.list_pop(ha).unwrap());
                        m.edges[*ia].pop();
                        m.refcount_sweep();
                    }
                }
                Op::Collect(g) => {
                    let reach = m.reachable();
                    hp.collect(g).unwrap();
                    for (o, w) in objs.iter().enumerate() {
                        let Some(w) = w else { continue };
                        let alive = !w.is_gone();
                        // Safety: nothing reachable dies; nothing dead comes back.
                        prop_assert!(!reach[o] || alive, "reachable object {} was freed", o);
                        prop_assert!(!alive || m.alive[o], "freed object {} is alive", o);
                        if g == 2 {
                            // A full collection frees exactly the unreachable objects.
                            prop_assert_eq!(alive, reach[o], "object {}", o);
                        }
                        // Young collections may leave garbage linked from older generations.
                        m.alive[o] = alive;
                    }
                }
                Op::Spill(i) if !hs.is_empty() => {
                    let (ia, h) = &hs[i % hs.len()];
                    if !m.is_list[*ia] {
                        hp.release_chunk(h).unwrap();
                        prop_assert_eq!(hp.chunk_state(h).unwrap(), "spilled");
                    }
                }
                Op::Finalize(i) if !hs.is_empty() => {
                    let (id, h) = &hs[i % hs.len()];
                    runs.push((*id, counted(h)));
                }
                Op::Reload(i) if !hs.is_empty() => {
                    let (ia, h) = &hs[i % hs.len()];
                    if !m.is_list[*ia] {
                        prop_assert_eq!(hp.with_chunk(h, |b| b.len()).unwrap(), 64);
                    }
                }
                _ => {}
            }
            // Garbage in cycles may linger until a collection; what is alive in the model after
            // refcounting must be alive in the heap, and vice versa after a full collection.
            prop_assert_eq!(hp.live_objects(), m.live());
            hp.state().check_tracking();
            for (i, w) in objs.iter().enumerate() {
                if let Some(w) = w {
                    prop_assert_eq!(!w.is_gone(), m.alive[i], "object {}", i);
                }
            }
        }
        drop(hs);
        m.handles.clear();
        m.refcount_sweep();
        hp.collect(2).unwrap();
        prop_assert_eq!(hp.live_objects(), 0);
        hp.state().check_tracking();
        // Every object's last finalizer ran exactly once; one replaced before it never ran.
        for (k, (id, r)) in runs.iter().enumerate() {
            let last = runs[k + 1..].iter().all(|(other, _)| other != id);
            prop_assert_eq!(r.load(Ordering::SeqCst), usize::from(last), "object {}", id);
        }
        prop_assert_eq!(std::fs::read_dir(hp.spill_dir()).unwrap().count(), 0);
    }
}

/// Shrunk from the model-based test: a self-cycle that is still young is freed by a
/// generation-0 collection, not only by a full one.
#[test]
fn pinned_young_collection_frees_a_young_self_cycle() {
    let hp = heap();
    let l = hp.list(&[]);
    let _leaf = hp.chunk(hp.alloc_buffer(64).unwrap(), true).unwrap();
    hp.list_append(&l, &l).unwrap();
    let w = l.downgrade();
    drop(l);
    assert_eq!(hp.collect(0).unwrap(), 1);
    assert!(w.is_gone());
    assert_eq!(hp.live_objects(), 1);
}

#[test]
fn handles_and_heaps_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<Heap>();
    both::<Handle>();
    both::<WeakHandle>();
}

#[test]
fn rayon_workers_share_chunks_under_budget_pressure() {
    use rayon::prelude::*;
    let budget = MemoryBudget::new(6 << 20);
    let hp = Heap::with_config(&HeapConfig {
        budget: Some(budget.clone()),
        temp_dir: None,
    })
    .unwrap();
    // 16 MiB of dirty chunks behind a 6 MiB budget, read and rewritten from all workers at once:
    // chunks in use are pinned, the others spill and come back intact.
    let chunks: Vec<Handle> = (0..16u64)
        .map(|i| {
            let mut b = hp.alloc_buffer(1 << 20).unwrap();
            b.as_mut_slice::<u64>().iter_mut().for_each(|v| *v = i);
            hp.chunk(b, true).unwrap()
        })
        .collect();
    for round in 1..4u64 {
        chunks.par_iter().enumerate().for_each(|(i, c)| {
            hp.with_chunk_mut(c, |b| {
                let s = b.as_mut_slice::<u64>();
                assert!(
                    s.iter().all(|&v| v == i as u64 + (round - 1) * 100),
                    "chunk {i} round {round}"
                );
                s.iter_mut().for_each(|v| *v += 100);
            })
            .unwrap();
        });
        assert!(budget.peak() <= 6 << 20);
    }
    assert!(hp.stats().chunk_bytes_spilled > 0);
    drop(chunks);
    assert_eq!(budget.used(), 0);
}

// ---- Regressions from review (each used to deadlock or misaccount) --------------------------

#[test]
fn replacing_a_finalizer_that_owns_a_handle() {
    let hp = heap();
    let a = hp.int(1);
    let b = hp.int(2);
    let b2 = b.clone();
    hp.set_finalizer(&a, Box::new(move |_| drop(b2)));
    hp.set_finalizer(&a, Box::new(|_| {})); // drops the first one, and with it a handle
    assert_eq!(b.refcount(), 1);
}

#[test]
fn finalizer_attached_after_resurrection_runs_once_more() {
    let hp = heap();
    let keep = hp.list(&[]);
    let a = hp.int(1);
    let k = keep.clone();
    hp.set_finalizer(
        &a,
        Box::new(move |me| k.heap().list_append(&k, me).unwrap()),
    );
    drop(a);
    let a = hp.list_pop(&keep).unwrap().unwrap(); // resurrected
    let other = hp.int(2);
    let runs = Arc::new(AtomicUsize::new(0));
    let (o2, r2) = (other.clone(), runs.clone());
    hp.set_finalizer(
        &a,
        Box::new(move |_| {
            drop(o2);
            r2.fetch_add(1, Ordering::SeqCst);
        }),
    );
    drop(a);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(other.refcount(), 1);
}

#[test]
fn collect_inside_finalizers_and_callbacks_is_absorbed() {
    let hp = heap();
    let l = hp.list(&[]);
    hp.list_append(&l, &l).unwrap();
    let hp2 = hp.clone();
    hp.set_finalizer(
        &l,
        Box::new(move |_| assert_eq!(hp2.collect(2).unwrap(), 0)),
    );
    let hp3 = hp.clone();
    hp.add_callback(move |_| {
        hp3.collect(0).unwrap();
    });
    drop(l);
    assert_eq!(hp.collect(2).unwrap(), 1);
    assert_eq!(hp.live_objects(), 0);
    // The callback owns a clone of the heap: clearing it lets the heap (and its spill
    // directory) go when the last handle drops.
    let dir = hp.spill_dir().to_path_buf();
    hp.clear_callbacks();
    drop(hp);
    assert!(
        !dir.exists(),
        "spill directory {} left behind",
        dir.display()
    );
}

#[test]
fn introspection_inside_a_chunk_closure() {
    let hp = heap();
    let c = hp.chunk(hp.alloc_buffer(64).unwrap(), true).unwrap();
    let (pinned, state, released) = hp
        .with_chunk(&c, |_| {
            (
                hp.stats().chunks_pinned,
                hp.chunk_state(&c).unwrap(),
                hp.release_chunk(&c).unwrap(),
            )
        })
        .unwrap();
    assert_eq!((pinned, state, released), (1, "pinned", 0));
}

#[test]
fn chunks_from_another_budget_are_moved_into_the_heaps() {
    let budget = MemoryBudget::new(1 << 20);
    let hp = Heap::with_config(&HeapConfig {
        budget: Some(budget.clone()),
        temp_dir: None,
    })
    .unwrap();
    let foreign = Buffer::zeroed(4096).unwrap(); // reserved in the global budget
    let c = hp.chunk(foreign, true).unwrap();
    assert_eq!(
        budget.used(),
        4096,
        "the heap accounts for what it may later spill"
    );
    assert_eq!(hp.release_chunk(&c).unwrap(), 4096);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_panicking_finalizer_does_not_leak_its_cycle() {
    let hp = heap();
    let l = hp.list(&[]);
    hp.list_append(&l, &l).unwrap();
    hp.set_finalizer(&l, Box::new(|_| panic!("finalizer failed")));
    drop(l);
    let n = hp.collect(2).unwrap(); // the panic message is printed; the collection completes
    assert_eq!(n, 1);
    assert_eq!(hp.live_objects(), 0);
}

#[test]
fn handles_from_another_heap_are_refused() {
    let (h1, h2) = (heap(), heap());
    let x = h2.int(111);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h1.as_int(&x)));
    assert!(
        r.is_err(),
        "a foreign handle must not read another object's value"
    );
}

#[test]
fn a_panicking_callback_does_not_disable_later_collections() {
    // Found by a reviewing subagent: the thread's "collecting" mark stayed set after a callback
    // panicked, and every later collect() on the thread returned 0 without collecting.
    let hp = heap();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let a2 = armed.clone();
    hp.add_callback(move |_| {
        if a2.swap(false, Ordering::SeqCst) {
            panic!("callback");
        }
    });
    let hp2 = hp.clone();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hp2.collect(0))).is_err());
    let l = hp.list(&[]);
    hp.list_append(&l, &l).unwrap();
    drop(l);
    assert_eq!(hp.collect(2).unwrap(), 1);
    hp.clear_callbacks();
    assert_eq!(hp.live_objects(), 0);
}

#[test]
fn a_finalizer_can_collect_another_heap() {
    // Only a collection of the same heap is absorbed by the one running on this thread.
    let a = heap();
    let b = heap();
    let l = b.list(&[]);
    b.list_append(&l, &l).unwrap();
    drop(l);
    let got = Arc::new(AtomicUsize::new(99));
    let (b2, got2) = (b.clone(), got.clone());
    let x = a.list(&[]);
    a.list_append(&x, &x).unwrap();
    let a2 = a.clone();
    a.set_finalizer(
        &x,
        Box::new(move |_| {
            // Absorbed: heap A is collecting on this thread.
            assert_eq!(a2.collect(2).unwrap(), 0);
            got2.store(b2.collect(2).unwrap() as usize, Ordering::SeqCst);
        }),
    );
    drop(x);
    assert_eq!(a.collect(2).unwrap(), 1);
    assert_eq!(
        got.load(Ordering::SeqCst),
        1,
        "heap B's collection was absorbed by A's"
    );
    assert_eq!(b.live_objects(), 0);
}

#[test]
fn lock_free_counts_race_the_collector() {
    // Handles clone and drop without the lock while another thread collects: an object some
    // handle reaches must never be finalized or freed, a count shared by threads must come out
    // exact, and every ring must be collected once its handles are gone.
    use std::sync::atomic::AtomicBool;
    let hp = heap();
    let shared = hp.list(&[]);
    let done = AtomicBool::new(false);
    let rings = 300;
    let runs = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let mut freed = 0;
            while !done.load(Ordering::SeqCst) {
                freed += hp.collect(2).unwrap();
            }
            freed
        });
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (hp, shared, runs) = (&hp, &shared, &runs);
                s.spawn(move || {
                    for i in 0..rings as i64 {
                        let leaf = hp.int(t * 100_000 + i);
                        let nodes: Vec<Handle> = (0..3).map(|_| hp.list(&[&leaf])).collect();
                        for k in 0..3 {
                            hp.list_append(&nodes[k], &nodes[(k + 1) % 3]).unwrap();
                        }
                        let dead = Arc::new(AtomicBool::new(false));
                        let (flag, runs) = (dead.clone(), runs.clone());
                        hp.set_finalizer(
                            &nodes[0],
                            Box::new(move |_| {
                                flag.store(true, Ordering::SeqCst);
                                runs.fetch_add(1, Ordering::SeqCst);
                            }),
                        );
                        let keep = nodes[0].clone();
                        drop(nodes);
                        for _ in 0..50 {
                            let copies: Vec<Handle> = (0..20).map(|_| keep.clone()).collect();
                            let others: Vec<Handle> = (0..20).map(|_| shared.clone()).collect();
                            assert!(!dead.load(Ordering::SeqCst), "finalized while held");
                            assert_eq!(hp.len(&copies[7]), 2, "a held ring stays whole");
                            drop((copies, others));
                        }
                        drop(keep);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        collector.join().unwrap();
    });
    hp.collect(2).unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2 * rings,
        "each ring finalized once"
    );
    assert_eq!(
        shared.refcount(),
        1,
        "every clone of the shared list was counted back"
    );
    assert_eq!(hp.live_objects(), 1, "only the shared list is left");
    drop(shared);
    assert_eq!(hp.live_objects(), 0);
}

#[cfg(target_pointer_width = "64")]
#[test]
fn a_slot_fits_in_one_cache_line() {
    // The collector's passes walk the slots of whole generations: their size is its memory
    // traffic (144 bytes per slot took twice the time of 64 for 1M objects in rings). The
    // reference count lives apart, in `Counts`.
    assert_eq!(std::mem::size_of::<super::Obj>(), 48);
    assert_eq!(std::mem::size_of::<super::Slot>(), 56);
}
