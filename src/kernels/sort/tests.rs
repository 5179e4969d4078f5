use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::dtype::ByteOrder;
use crate::storage::{Format, SourceInfo};

// ---------------------------------------------------------------------------------------------
// In-memory source and writer

/// An array held in memory, cut into chunks of `layout`.
struct MemSource {
    info: SourceInfo,
    bytes: Vec<u8>,
}

impl MemSource {
    fn new<T: Element>(vals: &[T], shape: &[u64], chunks: &[u64]) -> MemSource {
        let layout = ChunkLayout::regular(shape, chunks).unwrap();
        MemSource {
            info: SourceInfo {
                name: "mem".into(),
                path: PathBuf::from("mem"),
                format: Format::Npy,
                dtype: T::DTYPE,
                shape: shape.to_vec(),
                layout,
                byte_order: ByteOrder::NATIVE,
                stored_bytes: std::mem::size_of_val(vals) as u64,
                details: vec![],
            },
            bytes: bytemuck::cast_slice(vals).to_vec(),
        }
    }
}

impl ChunkSource for MemSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        let region = self.info.layout.chunk_region(index);
        let elem = self.info.dtype.size();
        let mut data = Buffer::zeroed(region.numel() as usize * elem)?;
        let full = Region::full(&self.info.shape);
        if self.info.shape.is_empty() {
            data.bytes_mut().copy_from_slice(&self.bytes);
        } else {
            copy_box(&self.bytes, &full, data.bytes_mut(), &region, &region, elem);
        }
        Ok(Chunk {
            region,
            dtype: self.info.dtype,
            data,
        })
    }
}

/// Where a [`MemWriter`] leaves its array when finished.
type Collected = Arc<Mutex<Option<Vec<u8>>>>;

/// Collects the chunks it is given into one C-order array; checks order and completeness. A
/// `positional` one also takes chunks in any order through `write_at` / `fill_at` (like
/// `.npy`), but not mixed with `write`.
struct MemWriter {
    layout: ChunkLayout,
    elem: usize,
    positional: bool,
    /// The array, the next chunk `write` expects, and which chunks were stored.
    state: Mutex<(Vec<u8>, usize, Vec<bool>)>,
    out: Collected,
}

fn mem_writer(shape: &[u64], chunks: &[u64], elem: usize) -> (Box<dyn ArrayWriter>, Collected) {
    mem_writer_with(shape, chunks, elem, false)
}

fn mem_writer_with(
    shape: &[u64],
    chunks: &[u64],
    elem: usize,
    positional: bool,
) -> (Box<dyn ArrayWriter>, Collected) {
    let out = Arc::new(Mutex::new(None));
    let n = crate::shape::numel(shape) as usize;
    let layout = ChunkLayout::regular(shape, chunks).unwrap();
    let nchunks = layout.num_chunks();
    let w = MemWriter {
        layout,
        elem,
        positional,
        state: Mutex::new((vec![0; n * elem], 0, vec![false; nchunks])),
        out: out.clone(),
    };
    (Box::new(w), out)
}

impl MemWriter {
    fn store(&self, index: usize, encoded: &[u8]) {
        let mut st = self.state.lock().unwrap();
        assert!(!st.2[index], "chunk {index} written twice");
        st.2[index] = true;
        let region = self.layout.chunk_region(index);
        assert_eq!(encoded.len(), region.numel() as usize * self.elem);
        let full = Region::full(&self.layout.shape());
        copy_box(encoded, &region, &mut st.0, &full, &region, self.elem);
    }
}

impl ArrayWriter for MemWriter {
    fn layout(&self) -> &ChunkLayout {
        &self.layout
    }

    fn write(&self, index: usize, encoded: &[u8]) -> Result<()> {
        {
            let mut st = self.state.lock().unwrap();
            assert_eq!(
                index, st.1,
                "chunks written out of order (or write after write_at)"
            );
            st.1 += 1;
        }
        self.store(index, encoded);
        Ok(())
    }

    fn positional(&self) -> bool {
        self.positional
    }

    fn write_at(&self, index: usize, encoded: &[u8]) -> Result<()> {
        assert!(self.positional, "write_at on a sequential writer");
        {
            // Like `.npy`'s, sequential and positional writes must not mix (the sequential
            // offset would be off): `write` afterwards finds its counter poisoned.
            let mut st = self.state.lock().unwrap();
            assert_eq!(st.1 % (1 << 40), 0, "write_at after write");
            st.1 = 1 << 40;
        }
        self.store(index, encoded);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let (bytes, _, stored) = self.state.into_inner().unwrap();
        assert!(stored.iter().all(|&s| s), "not every chunk written");
        *self.out.lock().unwrap() = Some(bytes);
        Ok(())
    }
}

fn taken(out: &Collected) -> Vec<u8> {
    out.lock().unwrap().take().expect("writer finished")
}

// ---------------------------------------------------------------------------------------------
// References (independent of the key functions)

trait TestElem: SortKey {
    /// NumPy's comparison: NaNs equal and last, -0.0 == 0.0.
    fn np_cmp(a: Self, b: Self) -> Ordering;
    /// The documented order of bit patterns among NumPy-equal values.
    fn tie(a: Self, b: Self) -> Ordering;
    /// A value from random bits, rich in duplicates and special values.
    fn from_bits64(bits: u64) -> Self;
}

macro_rules! int_test_elem {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            fn np_cmp(a: Self, b: Self) -> Ordering { a.cmp(&b) }
            fn tie(_: Self, _: Self) -> Ordering { Ordering::Equal }
            fn from_bits64(bits: u64) -> Self {
                match bits % 4 {
                    0 => (bits >> 8) as $t,
                    1 => <$t>::MIN,
                    2 => <$t>::MAX,
                    _ => ((bits >> 8) % 7) as $t,
                }
            }
        }
    )*};
}
int_test_elem!(i8, i16, i32, i64, u8, u16, u32, u64);

impl TestElem for Bool {
    fn np_cmp(a: Self, b: Self) -> Ordering {
        a.0.cmp(&b.0)
    }
    fn tie(_: Self, _: Self) -> Ordering {
        Ordering::Equal
    }
    fn from_bits64(bits: u64) -> Self {
        Bool(((bits >> 8) % 2) as u8)
    }
}

macro_rules! float_test_elem {
    ($t:ty, $u:ty) => {
        impl TestElem for $t {
            fn np_cmp(a: Self, b: Self) -> Ordering {
                match (a.is_nan(), b.is_nan()) {
                    (false, false) => a.partial_cmp(&b).unwrap(),
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                }
            }
            fn tie(a: Self, b: Self) -> Ordering {
                let (na, nb) = (a.is_sign_negative(), b.is_sign_negative());
                if a.is_nan() {
                    // Positive NaNs by payload, then negative NaNs by decreasing payload.
                    na.cmp(&nb).then_with(|| {
                        if na {
                            b.to_bits().cmp(&a.to_bits())
                        } else {
                            a.to_bits().cmp(&b.to_bits())
                        }
                    })
                } else {
                    nb.cmp(&na) // -0.0 first
                }
            }
            fn from_bits64(bits: u64) -> Self {
                let r = (bits >> 16) as $u;
                match bits % 16 {
                    0 => <$t>::NAN,
                    1 => -<$t>::NAN,
                    2 => <$t>::from_bits(<$t>::NAN.to_bits() | (r & 0xff)), // payload NaN
                    3 => -0.0,
                    4 => 0.0,
                    5 => <$t>::INFINITY,
                    6 => <$t>::NEG_INFINITY,
                    7 => ((bits >> 8) % 5) as $t - 2.0,
                    8 => <$t>::MIN_POSITIVE / 4.0, // subnormal
                    _ => ((bits >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 100.0) as $t,
                }
            }
        }
    };
}
float_test_elem!(f32, u32);
float_test_elem!(f64, u64);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn gen_vals<T: TestElem>(n: usize, seed: u64) -> Vec<T> {
    (0..n as u64)
        .map(|i| T::from_bits64(splitmix(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))))
        .collect()
}

/// `np.sort` with the documented tie order.
fn ref_sort<T: TestElem>(v: &[T]) -> Vec<T> {
    let mut s = v.to_vec();
    s.sort_by(|&a, &b| T::np_cmp(a, b).then_with(|| T::tie(a, b)));
    s
}

/// `np.argsort(kind="stable")`.
fn ref_argsort<T: TestElem>(v: &[T]) -> Vec<i64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| T::np_cmp(v[a], v[b]));
    idx.into_iter().map(|i| i as i64).collect()
}

fn bits<T: Element>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

fn opts(run_bytes: Option<u64>, budget: Option<MemoryBudget>, dir: &Path) -> SortOptions {
    SortOptions {
        axis: Axis::Flat,
        temp_dir: Some(dir.to_path_buf()),
        budget,
        run_bytes,
    }
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

fn no_progress(_: u64) {}

thread_local! {
    /// Overrides the size from which this thread's sorts spill bypassing the page cache.
    pub(super) static DIRECT_SPILL_MIN: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Successful `O_DIRECT` reads of spill files, by any test.
pub(super) static DIRECT_READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether `dir`'s file system takes `O_DIRECT` opens (tmpfs does not).
fn direct_io_works(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join("direct-probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

fn assert_dir_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

/// Sorts and argsorts `v` (shape, chunks) flattened; returns (sort bytes, argsort indices, sort
/// report).
fn run_flat<T: TestElem>(
    v: &[T],
    shape: &[u64],
    chunks: &[u64],
    out_chunk: u64,
    o: &SortOptions,
) -> (Vec<u8>, Vec<i64>, SortReport, SortReport) {
    let src = MemSource::new(v, shape, chunks);
    let n = v.len() as u64;
    let (w, out) = mem_writer(&[n], &[out_chunk], size_of::<T>());
    let rs = sort(&src, w, o, &no_progress).unwrap();
    let sorted = taken(&out);
    let (w, out) = mem_writer(&[n], &[out_chunk], 8);
    let ra = argsort(&src, w, o, &no_progress).unwrap();
    let idx = from_bytes::<i64>(&taken(&out));
    (sorted, idx, rs, ra)
}

#[track_caller]
fn check_flat<T: TestElem>(
    n: usize,
    shape: &[u64],
    chunks: &[u64],
    seed: u64,
    run_bytes: Option<u64>,
) {
    let v = gen_vals::<T>(n, seed);
    let dir = tempfile::tempdir().unwrap();
    let o = opts(run_bytes, None, dir.path());
    let (sorted, idx, rs, ra) = run_flat(&v, shape, chunks, 37, &o);
    let want = ref_sort(&v);
    assert_eq!(
        sorted,
        bits(&want),
        "{} sort of {n} (run_bytes {run_bytes:?})",
        T::DTYPE
    );
    assert_eq!(idx, ref_argsort(&v), "{} argsort of {n}", T::DTYPE);
    assert_eq!(rs.elements, n as u64);
    if n > 0 && run_bytes.is_some_and(|r| (r as usize) < n * size_of::<T>()) {
        // Argsort spills; sort takes the grouped path (re-reading the input) when the input is
        // at most `MAX_WAVES` half-run buffers, and spills otherwise.
        assert!(ra.spilled(), "{ra:?}");
        assert!(rs.spilled() || rs.groups > 0, "{rs:?}");
        if (n * size_of::<T>()) as u64 > grouped::MAX_WAVES * run_bytes.unwrap_or(0) / 2 + 8 {
            assert!(rs.spilled(), "{rs:?}");
        }
    }
    assert_dir_empty(dir.path());
}

/// Row-major coordinates are the flat order, so a 2-D test array's flat order is `v`.
fn check_all_dtypes(n: usize, shape: &[u64], chunks: &[u64], seed: u64, run_bytes: Option<u64>) {
    check_flat::<Bool>(n, shape, chunks, seed, run_bytes);
    check_flat::<i8>(n, shape, chunks, seed, run_bytes);
    check_flat::<i16>(n, shape, chunks, seed, run_bytes);
    check_flat::<i32>(n, shape, chunks, seed, run_bytes);
    check_flat::<i64>(n, shape, chunks, seed, run_bytes);
    check_flat::<u8>(n, shape, chunks, seed, run_bytes);
    check_flat::<u16>(n, shape, chunks, seed, run_bytes);
    check_flat::<u32>(n, shape, chunks, seed, run_bytes);
    check_flat::<u64>(n, shape, chunks, seed, run_bytes);
    check_flat::<f32>(n, shape, chunks, seed, run_bytes);
    check_flat::<f64>(n, shape, chunks, seed, run_bytes);
}

// ---------------------------------------------------------------------------------------------
// Keys

#[test]
fn float_keys_are_a_monotone_bijection() {
    let specials = [
        f64::NEG_INFINITY,
        -1e300,
        -1.0,
        -f64::MIN_POSITIVE / 2.0,
        -0.0,
        0.0,
        f64::MIN_POSITIVE / 2.0,
        1.0,
        f64::MAX,
        f64::INFINITY,
        f64::NAN,
        f64::from_bits(f64::NAN.to_bits() | 1),
        // Negative NaNs last, by decreasing payload (total_cmp's order, rotated).
        f64::from_bits((-f64::NAN).to_bits() | 1),
        -f64::NAN,
    ];
    for w in specials.windows(2) {
        assert!(w[0].to_key() < w[1].to_key(), "{:?} !< {:?}", w[0], w[1]);
    }
    for x in specials {
        assert_eq!(f64::from_key(x.to_key()).to_bits(), x.to_bits());
        let y = x as f32;
        assert_eq!(f32::from_key(y.to_key()).to_bits(), y.to_bits());
    }
    // Exhaustive over the f32 bit patterns' extremes and a stride through the rest.
    for b in (0..=u32::MAX)
        .step_by(65_537)
        .chain([0x7f80_0001, 0xff80_0001, 0xffff_ffff])
    {
        let x = f32::from_bits(b);
        assert_eq!(f32::from_key(x.to_key()).to_bits(), b);
    }
    assert_eq!((-0.0f64).arg_key(), 0.0f64.arg_key());
    assert_eq!((-f64::NAN).arg_key(), f64::NAN.arg_key());
    assert!(f64::INFINITY.arg_key() < f64::NAN.arg_key());
    assert!(i8::MIN.to_key() < (-1i8).to_key() && (-1i8).to_key() < 0i8.to_key());
}

// ---------------------------------------------------------------------------------------------
// Flat sort and argsort

#[test]
fn pinned_numpy_cases() {
    // np.sort / np.argsort(kind="stable") of this array (NumPy 2.4.6):
    // argsort -> [5 1 2 6 7 4 0 3], sort -> [-inf -0. 0. 0. -0. 1. nan nan] (stable order)
    let v = [
        f64::NAN,
        -0.0,
        0.0,
        -f64::NAN,
        1.0,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
    ];
    let dir = tempfile::tempdir().unwrap();
    for run_bytes in [None, Some(16)] {
        let o = opts(run_bytes, None, dir.path());
        let (sorted, idx, _, _) = run_flat(&v, &[8], &[3], 3, &o);
        assert_eq!(idx, [5, 1, 2, 6, 7, 4, 0, 3]);
        let want = [
            f64::NEG_INFINITY,
            -0.0,
            -0.0,
            0.0,
            0.0,
            1.0,
            f64::NAN,
            -f64::NAN,
        ];
        assert_eq!(sorted, bits(&want));
    }
    // Bool bytes other than 0/1 sort by byte, as NumPy: [0 1 1 2].
    let v = [Bool(2), Bool(1), Bool(0), Bool(1)];
    let o = opts(None, None, dir.path());
    let (sorted, idx, _, _) = run_flat(&v, &[4], &[2], 4, &o);
    assert_eq!(sorted, [0, 1, 1, 2]);
    assert_eq!(idx, [2, 1, 3, 0]);
}

#[test]
fn flat_in_memory_and_spilled_every_dtype() {
    check_all_dtypes(0, &[0], &[5], 1, None);
    check_all_dtypes(1, &[1], &[5], 2, Some(8));
    check_all_dtypes(1000, &[1000], &[77], 3, None);
    check_all_dtypes(1000, &[1000], &[77], 4, Some(256));
    // N-d chunks: flat C-order indices of a (20, 50) array in (7, 9) chunks.
    check_all_dtypes(1000, &[20, 50], &[7, 9], 5, Some(512));
}

/// Larger arrays in memory and in spilled runs (gathered while the previous run is written),
/// some N-d chunked so the argsort keys are not gathered in index order.
#[test]
fn larger_in_memory_and_spilled() {
    let n = 100_000;
    check_all_dtypes(n, &[n as u64], &[4099], 21, None);
    // Runs of 64 Ki f64 keys / 32 Ki argsort pairs: three or more runs of each.
    let run = 1 << 20;
    check_flat::<f64>(n, &[n as u64], &[5000], 22, Some(run));
    check_flat::<i64>(n, &[n as u64], &[5000], 23, Some(run));
    check_flat::<f32>(n, &[4, n as u64 / 4], &[3, 7001], 24, Some(run));
    check_flat::<u16>(n, &[n as u64], &[5000], 25, Some(run));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The loser-tree merge of any number of sorted runs (some empty) through small buffers.
    #[test]
    fn prop_merge_matches_sorted_concatenation(
        lens in prop::collection::vec(0usize..300, 1..13),
        seed in any::<u64>(),
        per in 1u64..40,
        direct in any::<bool>(),
        scale in prop_oneof![Just(1usize), Just(41)],
    ) {
        // Long runs (`scale`) need many refills even of a direct reader's smallest buffer
        // (three 4 KiB blocks), each keeping the unmerged tail of a block.
        let lens: Vec<usize> = lens.iter().map(|l| l * scale).collect();
        let dir = tempfile::tempdir().unwrap();
        let total: u64 = lens.iter().map(|&l| l as u64 * 8).sum();
        let (file, writer) = new_spill_file(dir.path(), total, direct).unwrap();
        let mut stats = SpillStats::default();
        let mut at = 0u64;
        let mut runs = Vec::new();
        let mut all = Vec::new();
        for (r, &len) in lens.iter().enumerate() {
            let mut v: Vec<u64> = (0..len as u64)
                .map(|i| splitmix(seed ^ (r as u64) << 32 ^ i) % 500)
                .collect();
            v.sort_unstable();
            all.extend_from_slice(&v);
            let start = at;
            spill(&writer, &mut at, &v, &mut stats).unwrap();
            runs.push(Run { file: file.clone(), start, len: len as u64 });
        }
        writer.finish().unwrap();
        all.sort_unstable();
        let budget = MemoryBudget::new(1 << 20);
        let mem = per * 8 * (lens.len() as u64 + 1);
        let mut got = Vec::new();
        merge::<u64>(runs, mem, &budget, &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        prop_assert_eq!(got, all);
        prop_assert_eq!(budget.used(), 0);
    }

    /// The in-memory merge of a round, cut into parallel pieces: any number of slices (some
    /// empty), heavy duplicates, and all-ones keys (the drained slices' sentinel).
    #[test]
    fn prop_parallel_round_merge_matches_sorting(
        lens in prop::collection::vec(0usize..2000, 1..40),
        seed in any::<u64>(),
        range in prop_oneof![Just(3u64), Just(1000), Just(u64::MAX)],
        ones in 0usize..5,
        threads in 1usize..4,
    ) {
        let mut runs: Vec<Vec<u64>> = lens
            .iter()
            .enumerate()
            .map(|(r, &len)| {
                (0..len as u64)
                    .map(|i| {
                        let x = splitmix(seed ^ (r as u64) << 32 ^ i);
                        if range == u64::MAX { x } else { x % range }
                    })
                    .collect()
            })
            .collect();
        for i in 0..ones {
            let r = i % runs.len();
            runs[r].push(u64::MAX);
        }
        for r in &mut runs {
            r.sort_unstable();
        }
        let mut want: Vec<u64> = runs.concat();
        want.sort_unstable();
        let slices: Vec<&[u64]> = runs.iter().map(|r| r.as_slice()).collect();
        let mut got = vec![0u64; want.len()];
        pool(threads).install(|| merge::merge_slices_from(&slices, &mut got, 64));
        prop_assert_eq!(&got, &want);
        // Argsort's 128-bit pairs go through the same code.
        let wide: Vec<Vec<u128>> = runs
            .iter()
            .map(|r| r.iter().map(|&x| (x as u128) << 64 | (x as u128 ^ 7)).collect())
            .collect();
        let slices: Vec<&[u128]> = wide.iter().map(|r| r.as_slice()).collect();
        let mut got = vec![0u128; want.len()];
        pool(threads).install(|| merge::merge_slices_from(&slices, &mut got, 64));
        let want: Vec<u128> = want.iter().map(|&x| (x as u128) << 64 | (x as u128 ^ 7)).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn zero_d_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let src = MemSource::new(&[3.5f64], &[], &[]);
    let o = opts(None, None, dir.path());
    let (w, out) = mem_writer(&[1], &[1], 8);
    sort(&src, w, &o, &no_progress).unwrap();
    assert_eq!(from_bytes::<f64>(&taken(&out)), [3.5]);
    let last = SortOptions {
        axis: Axis::Last,
        ..o.clone()
    };
    let (w, _) = mem_writer(&[1], &[1], 8);
    let e = sort(&src, w, &last, &no_progress).unwrap_err().to_string();
    assert!(e.contains("0-d") && e.contains("mem"), "{e}");
    // np.argsort of a 0-d array is [0].
    let (w, out) = mem_writer(&[1], &[1], 8);
    argsort(&src, w, &last, &no_progress).unwrap();
    assert_eq!(from_bytes::<i64>(&taken(&out)), [0]);
}

#[test]
fn wrong_output_shape_is_refused() {
    let src = MemSource::new(&[1i32, 2, 3, 4, 5, 6], &[2, 3], &[1, 3]);
    let (w, _) = mem_writer(&[2, 3], &[1, 3], 4);
    let e = sort(&src, w, &SortOptions::default(), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(6,)") && e.contains("(2, 3)"), "{e}");
}

/// Several merge passes under a 64 KiB budget: every buffer is reserved in it, it is never
/// exceeded, and everything is released.
#[test]
fn tiny_budget_forces_several_merge_passes() {
    let budget = MemoryBudget::new(64 << 10);
    let n = 40_000;
    let v = gen_vals::<f64>(n, 11);
    let dir = tempfile::tempdir().unwrap();
    let o = opts(None, Some(budget.clone()), dir.path());
    let (sorted, idx, rs, ra) = run_flat(&v, &[n as u64], &[1000], 100, &o);
    assert_eq!(sorted, bits(&ref_sort(&v)));
    assert_eq!(idx, ref_argsort(&v));
    assert!(
        rs.merge_passes >= 3 && ra.merge_passes >= 3,
        "{rs:?} {ra:?}"
    );
    assert!(rs.runs > 4 && rs.fan_in >= 2, "{rs:?}");
    assert!(rs.peak_spill_bytes >= (n * 8) as u64, "{rs:?}");
    assert!(rs.spilled_bytes > rs.peak_spill_bytes, "{rs:?}");
    assert!(budget.peak() <= 64 << 10, "peak {}", budget.peak());
    assert!(
        budget.peak() > 32 << 10,
        "the sort used little of its budget: {}",
        budget.peak()
    );
    assert_eq!(budget.used(), 0);
    assert_dir_empty(dir.path());
    assert!(rs.to_string().contains("merge pass"), "{rs}");
}

/// A sort and argsort under the global budget whose spill files bypass the page cache (the
/// threshold lowered for the test), with merge passes between direct files: same bytes as the
/// reference, reads were direct (where the file system allows it), nothing left behind.
#[test]
fn direct_spill_files_through_several_merge_passes() {
    let n = 200_000;
    let v = gen_vals::<f64>(n, 5);
    let dir = tempfile::tempdir().unwrap();
    let before = DIRECT_READS.load(std::sync::atomic::Ordering::Relaxed);
    DIRECT_SPILL_MIN.with(|m| m.set(Some(0)));
    let o = opts(Some(64 << 10), None, dir.path());
    let (sorted, idx, rs, ra) = run_flat(&v, &[n as u64], &[7000], 5000, &o);
    DIRECT_SPILL_MIN.with(|m| m.set(None));
    assert_eq!(sorted, bits(&ref_sort(&v)));
    assert_eq!(idx, ref_argsort(&v));
    assert!(
        rs.merge_passes >= 2 && ra.merge_passes >= 2,
        "{rs:?} {ra:?}"
    );
    if direct_io_works(dir.path()) {
        let reads = DIRECT_READS.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(reads > 100, "{reads} direct reads");
    }
    assert_dir_empty(dir.path());
}

/// A spill file cut short (mid-element or on an element boundary) is an error naming where it
/// ended, never a panic, through either kind of reader.
#[test]
fn truncated_spill_file_is_an_error() {
    for (direct, cut) in [
        (false, 12_003),
        (false, 12_000),
        (true, 12_003),
        (true, 8_192),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let v: Vec<u64> = (0..2000).collect();
        let (file, writer) = new_spill_file(dir.path(), 16_000, direct).unwrap();
        let mut stats = SpillStats::default();
        let mut at = 0;
        spill(&writer, &mut at, &v, &mut stats).unwrap();
        writer.finish().unwrap();
        file.file.set_len(cut).unwrap();
        let runs = vec![
            Run {
                file: file.clone(),
                start: 0,
                len: 1000,
            },
            Run {
                file: file.clone(),
                start: 1000,
                len: 1000,
            },
        ];
        let budget = MemoryBudget::new(1 << 20);
        let e = merge::<u64>(runs, 64 << 10, &budget, &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ended early") && e.contains("16000"), "{e}");
        assert_eq!(budget.used(), 0);
    }
}

#[test]
fn too_small_budget_is_a_clear_error() {
    let budget = MemoryBudget::new(4 << 10);
    let src = MemSource::new(&[1.0f64; 100], &[100], &[10]);
    let (w, _) = mem_writer(&[100], &[10], 8);
    let dir = tempfile::tempdir().unwrap();
    let e = sort(&src, w, &opts(None, Some(budget), dir.path()), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4.0 KiB") && e.contains("too small"), "{e}");
}

#[test]
fn missing_temp_dir_is_reported() {
    let src = MemSource::new(&gen_vals::<i32>(1000, 3), &[1000], &[100]);
    let (w, _) = mem_writer(&[1000], &[100], 4);
    let dir = PathBuf::from("/nonexistent/chunkheap-sort");
    let e = sort(&src, w, &opts(Some(64), None, &dir), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/chunkheap-sort") && e.contains("spill"),
        "{e}"
    );
}

#[test]
fn bytes_do_not_depend_on_threads_chunks_or_run_size() {
    let n = 5000;
    let v = gen_vals::<f32>(n, 21);
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for threads in [1, 2, 7] {
        for (chunks, run) in [(n as u64, None), (333, Some(1000)), (64, Some(100))] {
            let o = opts(run, None, dir.path());
            let r = pool(threads).install(|| run_flat(&v, &[n as u64], &[chunks], 999, &o));
            results.push((r.0, r.1));
        }
    }
    assert_eq!(results[0].0, bits(&ref_sort(&v)));
    for r in &results[1..] {
        assert!(r == &results[0]);
    }
    assert_dir_empty(dir.path());
}

/// Through real files: a chunked Zarr input and an `.npy` output written by `formats::create`.
#[test]
fn files_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.zarr");
    let input = input.to_str().unwrap();
    crate::generate::generate(
        input,
        &crate::generate::GenSpec {
            shape: vec![30, 70],
            dtype: DType::F64,
            dist: crate::generate::Dist::NORMAL,
            seed: 5,
            options: crate::WriteOptions {
                chunks: Some(vec![8, 16]),
                ..Default::default()
            },
        },
    )
    .unwrap();
    let src = crate::formats::open(input).unwrap();
    let all = src.read_region(&Region::full(&[30, 70])).unwrap();
    let v: Vec<f64> = all.as_slice::<f64>().to_vec();
    let out = dir.path().join("s.npy");
    let w = crate::formats::create(
        out.to_str().unwrap(),
        DType::F64,
        &[2100],
        &Default::default(),
    )
    .unwrap();
    let r = sort(
        src.as_ref(),
        w,
        &opts(Some(2048), None, spill.path()),
        &no_progress,
    )
    .unwrap();
    assert!(r.spilled());
    let back = crate::formats::open(out.to_str().unwrap()).unwrap();
    let got = back.read_region(&Region::full(&[2100])).unwrap();
    assert_eq!(got.bytes(), &bits(&ref_sort(&v))[..]);
    assert_dir_empty(spill.path());
}

// ---------------------------------------------------------------------------------------------
// Along the last axis

#[track_caller]
fn check_last<T: TestElem>(
    shape: &[u64],
    in_chunks: &[u64],
    out_chunks: &[u64],
    seed: u64,
    budget: Option<MemoryBudget>,
) -> SortReport {
    let n = crate::shape::numel(shape) as usize;
    let v = gen_vals::<T>(n, seed);
    let dir = tempfile::tempdir().unwrap();
    let o = SortOptions {
        axis: Axis::Last,
        ..opts(None, budget, dir.path())
    };
    let src = MemSource::new(&v, shape, in_chunks);
    let (w, out) = mem_writer(shape, out_chunks, size_of::<T>());
    let rs = sort(&src, w, &o, &no_progress).unwrap();
    let got = taken(&out);
    let (w, out) = mem_writer(shape, out_chunks, 8);
    argsort(&src, w, &o, &no_progress).unwrap();
    let idx = from_bytes::<i64>(&taken(&out));
    let row = *shape.last().unwrap() as usize;
    let mut want = Vec::new();
    let mut want_idx = Vec::new();
    if row > 0 {
        for r in v.chunks(row) {
            want.extend(ref_sort(r));
            want_idx.extend(ref_argsort(r));
        }
    }
    assert_eq!(
        got,
        bits(&want),
        "{} sort along the last axis of {shape:?}",
        T::DTYPE
    );
    assert_eq!(
        idx,
        want_idx,
        "{} argsort along the last axis of {shape:?}",
        T::DTYPE
    );
    assert_dir_empty(dir.path());
    rs
}

#[test]
fn last_axis_bands_and_partial_chunks() {
    check_last::<f64>(&[13, 29], &[4, 7], &[5, 29], 1, None);
    check_last::<f64>(&[13, 29], &[4, 7], &[5, 8], 2, None);
    check_last::<i16>(&[3, 4, 17], &[2, 3, 5], &[2, 1, 6], 3, None);
    check_last::<Bool>(&[6, 5], &[6, 5], &[1, 5], 4, None);
    check_last::<f32>(&[1, 2000], &[1, 300], &[1, 512], 5, None);
    check_last::<u8>(&[4, 0], &[1, 1], &[1, 1], 6, None);
    check_last::<u8>(&[0, 4], &[1, 1], &[1, 1], 6, None);
    // 1-D: the last axis is the whole array (and may spill).
    check_last::<i64>(&[500], &[64], &[100], 7, None);
}

#[test]
fn last_axis_stages_rows_when_a_band_does_not_fit() {
    // Output chunks of 40 x 7 make bands of 40 rows of 50 f64 (16 KB + buffers) in a 12 KiB
    // budget: rows go through a staging file in bands that fit.
    let budget = MemoryBudget::new(12 << 10);
    let r = check_last::<f64>(
        &[2, 40, 50],
        &[1, 9, 11],
        &[1, 40, 7],
        8,
        Some(budget.clone()),
    );
    assert!(r.spilled() && r.runs > 2, "{r:?}");
    assert!(budget.peak() <= 12 << 10);
    assert_eq!(budget.used(), 0);
}

#[test]
fn last_axis_row_too_long_is_a_clear_error() {
    let budget = MemoryBudget::new(8 << 10);
    let src = MemSource::new(&vec![1u64; 4000], &[2, 2000], &[1, 100]);
    let (w, _) = mem_writer(&[2, 2000], &[1, 100], 8);
    let o = SortOptions {
        axis: Axis::Last,
        budget: Some(budget),
        ..SortOptions::default()
    };
    let e = sort(&src, w, &o, &no_progress).unwrap_err().to_string();
    assert!(
        e.contains("a row of 2000 elements") && e.contains("8.0 KiB"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Top-k

fn ref_top_k<T: TestElem>(v: &[T], k: usize, largest: bool) -> (Vec<u8>, Vec<i64>) {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    if largest {
        idx.sort_by(|&a, &b| T::np_cmp(v[b], v[a]));
    } else {
        idx.sort_by(|&a, &b| T::np_cmp(v[a], v[b]));
    }
    idx.truncate(k);
    let vals: Vec<T> = idx.iter().map(|&i| v[i]).collect();
    (bits(&vals), idx.into_iter().map(|i| i as i64).collect())
}

#[track_caller]
fn check_top_k<T: TestElem>(v: &[T], shape: &[u64], chunks: &[u64], k: usize, largest: bool) {
    let src = MemSource::new(v, shape, chunks);
    let (vals, idx) = top_k(&src, k, largest).unwrap();
    let (want_v, want_i) = ref_top_k(v, k, largest);
    assert_eq!(idx, want_i, "{} top-{k} (largest {largest})", T::DTYPE);
    assert_eq!(vals.bytes(), &want_v[..]);
}

#[test]
fn top_k_pinned_and_errors() {
    // np.argsort(-a, kind="stable") style: NaN largest, ties to the smaller index.
    let v = [1.0, f64::NAN, -0.0, 3.0, 0.0, f64::NAN, 3.0];
    let src = MemSource::new(&v, &[7], &[3]);
    let (vals, idx) = top_k(&src, 4, true).unwrap();
    assert_eq!(idx, [1, 5, 3, 6]);
    assert!(vals.as_slice::<f64>()[0].is_nan() && vals.as_slice::<f64>()[3] == 3.0);
    let (vals, idx) = top_k(&src, 3, false).unwrap();
    assert_eq!(idx, [2, 4, 0]);
    assert_eq!(bits(vals.as_slice::<f64>()), bits(&[-0.0, 0.0, 1.0]));
    let e = top_k(&src, 8, true).unwrap_err().to_string();
    assert!(e.contains("k = 8") && e.contains("7 elements"), "{e}");
    assert!(top_k(&src, 0, true).unwrap().1.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties

#[derive(Debug, Clone, Copy)]
enum Dt {
    Bool,
    I8,
    I32,
    U16,
    U64,
    F32,
    F64,
}

fn dt() -> impl Strategy<Value = Dt> {
    prop_oneof![
        Just(Dt::Bool),
        Just(Dt::I8),
        Just(Dt::I32),
        Just(Dt::U16),
        Just(Dt::U64),
        Just(Dt::F32),
        Just(Dt::F64)
    ]
}

/// A shape of up to 3 dims with up to ~3000 elements and a chunk shape for it.
fn shape_and_chunks() -> impl Strategy<Value = (Vec<u64>, Vec<u64>)> {
    prop::collection::vec(1u64..16, 1..=3)
        .prop_flat_map(|shape| {
            let s = shape.clone();
            let extra = 1u64..(3000 / crate::shape::numel(&s)).max(2);
            (Just(shape), extra)
        })
        .prop_flat_map(|(mut shape, extra)| {
            shape[0] *= extra;
            let chunks: Vec<_> = shape.iter().map(|&d| 1..=d).collect();
            (Just(shape), chunks)
        })
}

macro_rules! by_dt {
    ($dt:expr, $f:ident ( $($arg:expr),* )) => {
        match $dt {
            Dt::Bool => $f::<Bool>($($arg),*),
            Dt::I8 => $f::<i8>($($arg),*),
            Dt::I32 => $f::<i32>($($arg),*),
            Dt::U16 => $f::<u16>($($arg),*),
            Dt::U64 => $f::<u64>($($arg),*),
            Dt::F32 => $f::<f32>($($arg),*),
            Dt::F64 => $f::<f64>($($arg),*),
        }
    };
}

fn prop_flat<T: TestElem>(
    shape: &[u64],
    chunks: &[u64],
    seed: u64,
    run: Option<u64>,
    threads: usize,
) {
    let n = crate::shape::numel(shape) as usize;
    pool(threads).install(|| check_flat::<T>(n, shape, chunks, seed, run));
}

fn prop_top<T: TestElem>(shape: &[u64], chunks: &[u64], seed: u64, k: usize, threads: usize) {
    let n = crate::shape::numel(shape) as usize;
    let v = gen_vals::<T>(n, seed);
    let k = k.min(n);
    pool(threads).install(|| {
        check_top_k(&v, shape, chunks, k, true);
        check_top_k(&v, shape, chunks, k, false);
    });
}

fn prop_last<T: TestElem>(shape: &[u64], chunks: &[u64], out: &[u64], seed: u64, threads: usize) {
    pool(threads).install(|| {
        check_last::<T>(shape, chunks, out, seed, None);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn prop_sort_argsort_match_reference(
        (shape, chunks) in shape_and_chunks(),
        d in dt(),
        seed in any::<u64>(),
        run in prop_oneof![Just(None), (8u64..4096).prop_map(Some)],
        threads in prop_oneof![Just(1usize), Just(2), Just(7)],
    ) {
        by_dt!(d, prop_flat(&shape, &chunks, seed, run, threads));
    }

    #[test]
    fn prop_top_k_matches_reference(
        (shape, chunks) in shape_and_chunks(),
        d in dt(),
        seed in any::<u64>(),
        k in 0usize..200,
        threads in prop_oneof![Just(1usize), Just(2), Just(7)],
    ) {
        by_dt!(d, prop_top(&shape, &chunks, seed, k, threads));
    }

    #[test]
    fn prop_last_axis_matches_reference(
        (shape, chunks) in shape_and_chunks(),
        out_seed in any::<u64>(),
        d in dt(),
        seed in any::<u64>(),
        threads in prop_oneof![Just(1usize), Just(2), Just(7)],
    ) {
        let out: Vec<u64> = shape
            .iter()
            .enumerate()
            .map(|(i, &s)| 1 + (out_seed >> (i * 16)) % s)
            .collect();
        by_dt!(d, prop_last(&shape, &chunks, &out, seed, threads));
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// 512 MiB of seeded uniform f64 sorted under a 128 MiB budget (external) vs an in-memory
/// `par_sort_unstable` of the same data. Run with
/// `cargo test --release --lib kernels::sort::tests::measure_512mib -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_512mib() {
    use std::time::Instant;
    let dir =
        tempfile::tempdir_in(std::env::var("SORT_BENCH_DIR").unwrap_or("/tmp".into())).unwrap();
    let n: u64 = 64 << 20; // 512 MiB of f64
    let input = dir.path().join("x.npy");
    let input = input.to_str().unwrap();
    crate::generate::generate(
        input,
        &crate::generate::GenSpec {
            shape: vec![n],
            dtype: DType::F64,
            dist: crate::generate::Dist::UNIFORM,
            seed: 42,
            options: Default::default(),
        },
    )
    .unwrap();
    let src = crate::formats::open(input).unwrap();
    let out = dir.path().join("sorted.npy");
    let global = memory::global();
    let old = global.limit();
    global.set_limit(128 << 20);
    global.reset_peak();
    let t = Instant::now();
    let w = crate::formats::create(out.to_str().unwrap(), DType::F64, &[n], &Default::default())
        .unwrap();
    let report = sort(
        src.as_ref(),
        w,
        &SortOptions {
            temp_dir: Some(dir.path().into()),
            ..Default::default()
        },
        &no_progress,
    )
    .unwrap();
    let external = t.elapsed();
    let peak = global.peak();
    global.set_limit(old);
    eprintln!(
        "external sort (128 MiB budget): {:.2} s; {report}; budget peak {}",
        external.as_secs_f64(),
        human_bytes(peak)
    );

    // Baseline: read everything, par_sort_unstable_by(total order), in memory.
    let t = Instant::now();
    let all = src.read_region(&Region::full(&[n])).unwrap();
    let mut v: Vec<f64> = all.as_slice::<f64>().to_vec();
    drop(all);
    let t_sort = Instant::now();
    v.par_sort_unstable_by(|a, b| a.total_cmp(b));
    let in_mem = t.elapsed();
    eprintln!(
        "in-memory read + par_sort_unstable_by: {:.2} s (sort alone {:.2} s); ratio {:.2}",
        in_mem.as_secs_f64(),
        t_sort.elapsed().as_secs_f64(),
        external.as_secs_f64() / in_mem.as_secs_f64()
    );
    let back = crate::formats::open(out.to_str().unwrap()).unwrap();
    let got = back.read_region(&Region::full(&[n])).unwrap();
    assert!(got.as_slice::<f64>() == &v[..]);
}

/// The elements of (possibly unaligned) bytes.
fn from_bytes<T: Pod>(b: &[u8]) -> Vec<T> {
    b.chunks_exact(size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

/// Sorts `$SORT_XCHECK_DIR/{f64,i16}.npy` (written by NumPy) into `*_sort.npy`, `*_argsort.npy`,
/// `*_sort_last.npy`, `*_argsort_last.npy`, `*_top.npy` / `*_topi.npy` for comparison with NumPy
/// (by hand; see the sort report). Spills (small runs) for the flat sorts.
#[test]
#[ignore]
fn numpy_cross_check() {
    let dir = std::env::var("SORT_XCHECK_DIR")
        .expect("set SORT_XCHECK_DIR to the NumPy files' directory");
    let spill = tempfile::tempdir().unwrap();
    for name in ["f64", "i16"] {
        let src = crate::formats::open(&format!("{dir}/{name}.npy")).unwrap();
        let info = src.info().clone();
        let n = info.numel();
        for (axis, suffix) in [(Axis::Flat, ""), (Axis::Last, "_last")] {
            let shape = if axis == Axis::Flat {
                vec![n]
            } else {
                info.shape.clone()
            };
            let o = SortOptions {
                axis,
                ..opts(Some(4096), None, spill.path())
            };
            let w = crate::formats::create(
                &format!("{dir}/{name}_sort{suffix}.npy"),
                info.dtype,
                &shape,
                &Default::default(),
            )
            .unwrap();
            sort(src.as_ref(), w, &o, &no_progress).unwrap();
            let w = crate::formats::create(
                &format!("{dir}/{name}_argsort{suffix}.npy"),
                DType::I64,
                &shape,
                &Default::default(),
            )
            .unwrap();
            argsort(src.as_ref(), w, &o, &no_progress).unwrap();
        }
        for (largest, tag) in [(true, "large"), (false, "small")] {
            let (vals, idx) = top_k(src.as_ref(), 50, largest).unwrap();
            let w = crate::formats::create(
                &format!("{dir}/{name}_top_{tag}.npy"),
                info.dtype,
                &[50],
                &Default::default(),
            )
            .unwrap();
            w.write(0, vals.bytes()).unwrap();
            w.finish().unwrap();
            let w = crate::formats::create(
                &format!("{dir}/{name}_topi_{tag}.npy"),
                DType::I64,
                &[50],
                &Default::default(),
            )
            .unwrap();
            w.write(0, bytemuck::cast_slice(&idx)).unwrap();
            w.finish().unwrap();
        }
    }
    assert_dir_empty(spill.path());
}

// ---------------------------------------------------------------------------------------------
// The grouped (splitter) path of the flat sort

/// Values drawn from a few shapes of data: any bit patterns (NaNs of several payloads, `-0.0`,
/// infinities), a few distinct values, one heavy value among others, all equal.
fn shaped_vals<T: TestElem>(n: usize, seed: u64, mode: u8) -> Vec<T> {
    (0..n as u64)
        .map(|i| {
            let r = splitmix(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let bits = match mode {
                0 => r,
                1 => splitmix(seed ^ (r % 4)),
                2 if r % 10 < 8 => splitmix(seed),
                2 => r,
                _ => splitmix(seed),
            };
            T::from_bits64(bits)
        })
        .collect()
}

/// Sorts `v` flattened in `chunk`-sized chunks on `threads` threads and checks the bytes against
/// the reference; returns the report.
fn check_grouped<T: TestElem>(
    v: &[T],
    chunk: u64,
    out_chunk: u64,
    run: Option<u64>,
    threads: usize,
) -> SortReport {
    let n = v.len() as u64;
    let src = MemSource::new(v, &[n], &[chunk]);
    let dir = tempfile::tempdir().unwrap();
    let o = opts(run, None, dir.path());
    let want = bits(&ref_sort(v));
    let mut report = None;
    // In order through `write`, and in place through `fill_at` / `write_at` (as `.npy` takes it).
    for positional in [false, true] {
        let (w, out) = mem_writer_with(&[n], &[out_chunk], size_of::<T>(), positional);
        let r = pool(threads)
            .install(|| sort(&src, w, &o, &no_progress))
            .unwrap();
        assert_eq!(
            taken(&out),
            want,
            "{} sort of {n} in chunks of {chunk}, run_bytes {run:?}, {threads} threads, \
             positional {positional}: {r:?}",
            T::DTYPE
        );
        assert_eq!(r.elements, n);
        assert_dir_empty(dir.path());
        report = Some(r);
    }
    report.expect("two runs")
}

fn prop_grouped<T: TestElem>(
    n: usize,
    seed: u64,
    mode: u8,
    chunk: u64,
    out_chunk: u64,
    run: Option<u64>,
    threads: usize,
) {
    let v = shaped_vals::<T>(n, seed, mode);
    check_grouped(&v, chunk, out_chunk, run, threads);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any data shape, chunking, run size (tiny ones force many groups, several waves or the
    /// external fallback) and thread count gives the reference's bytes.
    #[test]
    fn prop_grouped_sort_matches_reference(
        n in 0usize..5000,
        seed in any::<u64>(),
        mode in 0u8..4,
        d in dt(),
        chunk in 1u64..900,
        out_chunk in 1u64..700,
        run in prop_oneof![Just(None), (8u64..40_000).prop_map(Some)],
        threads in prop_oneof![Just(1usize), Just(2), Just(7)],
    ) {
        by_dt!(d, prop_grouped(n, seed, mode, chunk, out_chunk, run, threads));
    }
}

/// Which path a sort takes: waves of groups when the input is a few buffers, the external merge
/// beyond that; heavy keys are counted, not stored.
#[test]
fn grouped_paths_and_fallback() {
    let n = 20_000;
    let v = shaped_vals::<f64>(n, 5, 0);
    // Everything fits: the counting scan gathers it all too (sample, count: two scans).
    let r = check_grouped(&v, 1000, 333, None, 2);
    assert!(
        r.groups > 1 && !r.spilled() && r.scans == 2 && r.runs == 1,
        "{r:?}"
    );
    // Half-buffers of 25 KB for up to 160 KB of stored keys (specials are counted): several
    // waves, one scan each but the first two (gathered by the counting scan into both buffers).
    let r = check_grouped(&v, 1000, 333, Some(50_000), 2);
    assert!(r.groups > 1 && !r.spilled() && r.runs >= 3, "{r:?}");
    assert_eq!(r.scans, r.runs);
    // More than MAX_WAVES half-buffers: the external merge.
    let r = check_grouped(&v, 1000, 333, Some(8_000), 2);
    assert!(r.spilled() && r.groups == 0, "{r:?}");
    // All equal: one heavy key, counted only (no gather scan at all).
    let same = shaped_vals::<f64>(n, 5, 3);
    let r = check_grouped(&same, 999, 128, Some(40_000), 7);
    assert!(!r.spilled() && r.run_bytes == 0 && r.scans == 2, "{r:?}");
    // Few distinct values: all counted.
    let few = shaped_vals::<i32>(n, 6, 1);
    let r = check_grouped(&few, 777, 100, Some(20_000), 1);
    assert!(!r.spilled() && r.run_bytes == 0, "{r:?}");
    // Bytes do not depend on threads, chunks or run size.
    for (chunk, run, t) in [
        (1, Some(4_000), 1),
        (4096, None, 7),
        (313, Some(100_000), 2),
    ] {
        check_grouped(&v, chunk, 1000, run, t);
    }
}

/// When the keys left after the two waves the counting scan collects are at most one wave (and
/// half the input), that scan writes them to a spill file and the last wave is gathered from it:
/// two scans of the input, whatever the threads, chunks or key types.
#[test]
fn the_last_wave_comes_from_a_spill_file() {
    let n = 20_000;
    for (t, chunk) in [(2, 1000), (2, 333), (3, 20_000)] {
        let v = shaped_vals::<f64>(n, 11, 0);
        let r = check_grouped(&v, chunk, 777, Some(80_000), t);
        assert!(
            r.groups > 1 && r.runs == 3 && r.scans == 2 && r.spilled_bytes > 0,
            "{r:?}"
        );
        assert!(r.to_string().contains("of keys spilled"), "{r}");
        let w = shaped_vals::<f32>(n, 13, 0);
        let r = check_grouped(&w, chunk, 500, Some(40_000), t);
        assert!(r.runs == 3 && r.scans == 2 && r.spilled_bytes > 0, "{r:?}");
    }
    // More than a wave left after the counting scan's two: re-scanned, not spilled.
    let v = shaped_vals::<f64>(n, 11, 0);
    let r = check_grouped(&v, 1000, 777, Some(50_000), 2);
    assert!(r.runs > 3 && r.spilled_bytes == 0, "{r:?}");
}

/// The same under a sort budget of its own that leaves the grouped path little beyond its
/// buffers: reading the spill back fits what the counting scan's staging had, and the budget's
/// peak stays under the limit.
#[test]
fn a_spilled_last_wave_fits_a_tight_budget() {
    let n = 1_700_000usize;
    // Distinct values in no order (no specials, which would be counted, not stored).
    let v: Vec<f64> = (0..n as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64)
        .collect();
    let want = bits(&ref_sort(&v));
    let src = MemSource::new(&v, &[n as u64], &[100_000]);
    let dir = tempfile::tempdir().unwrap();
    let limit = 16u64 << 20;
    let budget = MemoryBudget::new(limit);
    let o = opts(None, Some(budget.clone()), dir.path());
    let (w, out) = mem_writer_with(&[n as u64], &[50_000], 8, true);
    let r = pool(2).install(|| sort(&src, w, &o, &no_progress)).unwrap();
    assert_eq!(taken(&out), want);
    assert!(
        r.groups > 1 && r.runs >= 3 && r.scans == 2 && r.spilled_bytes > 0,
        "{r:?}"
    );
    assert!(budget.peak() <= limit, "{} > {limit}", budget.peak());
    assert_dir_empty(dir.path());
}

/// A sample that misrepresents the data (every sampled position holds a small key, every other
/// one a large key) overflows the rooms the counting scan fills: those keys are gathered again
/// by a scan of their own, with the same result.
#[test]
fn early_gather_falls_back_when_the_sample_lies() {
    let n = 200_000usize;
    let m = 1u128 << 16;
    let mut v: Vec<f64> = (0..n).map(|i| 1e9 + i as f64).collect();
    for j in 0..m {
        let p = ((2 * j + 1) * n as u128 / (2 * m)) as usize;
        v[p] = (p % 1000) as f64;
    }
    // One input chunk, so the sample's positions are the ones above.
    let r = check_grouped(&v, n as u64, 4096, None, 2);
    assert!(!r.spilled() && r.groups > 1 && r.scans == 3, "{r:?}");
}

/// The same with only the first groups collected early (a budget of a few waves): the
/// overflowing rooms' keys are gathered like any later wave's, with any thread count.
#[test]
fn partial_early_wave_falls_back_too() {
    let n = 200_000usize;
    let m = 1u128 << 16;
    let mut v: Vec<f64> = (0..n).map(|i| (i % 7919) as f64).collect();
    let sampled: std::collections::HashSet<usize> = (0..m)
        .map(|j| ((2 * j + 1) * n as u128 / (2 * m)) as usize)
        .collect();
    // Unsampled keys crowd into the second group's range (just above the smallest keys).
    let mut crowd = 0;
    for (i, x) in v.iter_mut().enumerate() {
        if !sampled.contains(&i) && crowd < 33_000 {
            *x = 1.5 + (i % 97) as f64 * 1e-6;
            crowd += 1;
        }
    }
    for t in [1, 2, 7] {
        let r = check_grouped(&v, n as u64, 4096, Some(8 * 120_000), t);
        // Several waves, each gathered by a scan of its own (the early one was given up).
        assert!(r.groups > 1 && r.runs > 1 && r.scans == 2 + r.runs, "{r:?}");
    }
}

/// Sorts run from inside the global pool, all of its workers at once, finish (the output
/// thread only writes; sorting stays in the caller's pool).
#[test]
fn sorts_from_inside_the_pool_finish() {
    let v = shaped_vals::<f64>(200_000, 9, 0);
    let want = bits(&ref_sort(&v));
    let got: Vec<Vec<u8>> = (0..8)
        .into_par_iter()
        .map(|_| {
            let src = MemSource::new(&v, &[v.len() as u64], &[20_000]);
            let dir = tempfile::tempdir().unwrap();
            let o = opts(None, None, dir.path());
            let (w, out) = mem_writer(&[v.len() as u64], &[7_000], 8);
            sort(&src, w, &o, &no_progress).unwrap();
            taken(&out)
        })
        .collect();
    assert!(got.iter().all(|g| *g == want));
}

#[test]
fn group_bounds_from_a_sample() {
    // Heavy keys get single-key groups; the rest is cut every ~4 sample keys.
    let mut s: Vec<u64> = (0..20).collect();
    s.extend([7; 10]);
    s.extend([u64::MAX; 6]);
    s.sort_unstable();
    let g = grouped::Groups::from_sample(&s, 4);
    for k in [0u64, 3, 7, 8, 19, 1000, u64::MAX - 1, u64::MAX] {
        let i = g.of(k);
        assert!(g.lowers[i] <= k, "{k} in group {i} of {:?}", g.lowers);
        assert!(
            g.lowers.get(i + 1).is_none_or(|&h| k < h),
            "{k}: {:?}",
            g.lowers
        );
    }
    let seven = g.of(7);
    assert!(g.single[seven] && g.lowers[seven] == 7, "{:?}", g.lowers);
    let top = g.of(u64::MAX);
    assert!(g.single[top] && g.lowers[top] == u64::MAX, "{:?}", g.lowers);
    assert!(g.lowers.len() > 4, "{:?}", g.lowers);
}
