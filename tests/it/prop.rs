//! Property tests: for random shapes, chunkings, byte orders, memory orders and values, chunked
//! results equal a naive in-memory reference.

use std::io::Write;
use std::path::Path;

use chunkheap::formats::npy::{NpySource, ReadMode};
use chunkheap::reduce::{Scalar, stats};
use chunkheap::shape::{Region, numel};
use chunkheap::storage::{Codec, WriteOptions};
use chunkheap::{ChunkSource, formats, pipeline};
use proptest::prelude::*;

/// Values of a random array as f64 (the reference works in f64; our fixtures keep values exact).
#[derive(Clone, Debug)]
struct Case {
    shape: Vec<u64>,
    values: Vec<f64>,
    fortran: bool,
    big_endian: bool,
    chunk_bytes: u64,
    zarr_chunks: Vec<u64>,
    codec: u8,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(0u64..7, 0..5),
        any::<bool>(),
        any::<bool>(),
        1u64..300,
        0u8..3,
    )
        .prop_flat_map(|(shape, fortran, big_endian, chunk_bytes, codec)| {
            let n = numel(&shape) as usize;
            let zc = shape.iter().map(|&d| 1..=d.max(1)).collect::<Vec<_>>();
            // Small integers in f64 (exact sums), a NaN now and then, repeated values for ties.
            let value = prop_oneof![8 => (-20i32..20).prop_map(f64::from), 1 => Just(f64::NAN)];
            (
                Just(shape),
                prop::collection::vec(value, n),
                Just(fortran),
                Just(big_endian),
                Just(chunk_bytes),
                zc,
                Just(codec),
            )
        })
        .prop_map(
            |(shape, values, fortran, big_endian, chunk_bytes, zarr_chunks, codec)| Case {
                shape,
                values,
                fortran,
                big_endian,
                chunk_bytes,
                zarr_chunks,
                codec,
            },
        )
}

/// Writes `values` (C order) as a `.npy` of f64 in the requested memory and byte order.
fn write_npy(path: &Path, shape: &[u64], values: &[f64], fortran: bool, big_endian: bool) {
    let shape_txt = chunkheap::shape::shape_str(shape);
    let dict = format!(
        "{{'descr': '{}f8', 'fortran_order': {}, 'shape': {shape_txt}, }}",
        if big_endian { '>' } else { '<' },
        if fortran { "True" } else { "False" }
    );
    // Odd padding on purpose: the data offset is often not 8-aligned.
    let mut header = dict.into_bytes();
    header.resize(header.len() + 3, b' ');
    header.push(b'\n');
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    let order: Vec<usize> = if fortran {
        fortran_order(shape)
    } else {
        (0..values.len()).collect()
    };
    for i in order {
        let b = if big_endian {
            values[i].to_be_bytes()
        } else {
            values[i].to_le_bytes()
        };
        f.write_all(&b).unwrap();
    }
}

/// C-order indices listed in Fortran storage order.
fn fortran_order(shape: &[u64]) -> Vec<usize> {
    let n = numel(shape) as usize;
    let strides = chunkheap::shape::c_strides(shape);
    (0..n)
        .map(|f| {
            let mut rem = f as u64;
            let mut c = 0u64;
            for ax in 0..shape.len() {
                c += (rem % shape[ax]) * strides[ax];
                rem /= shape[ax];
            }
            c as usize
        })
        .collect()
}

/// (count, nan count, sum, mean, var, (min, argmin), (max, argmax)).
type Reference = (
    u64,
    u64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<(f64, u64)>,
    Option<(f64, u64)>,
);

/// The naive reference.
fn reference(v: &[f64]) -> Reference {
    let ok: Vec<(usize, f64)> = v
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, x)| !x.is_nan())
        .collect();
    let count = ok.len() as u64;
    let sum: f64 = ok.iter().map(|p| p.1).sum();
    let mean = (count > 0).then(|| sum / count as f64);
    let var = mean.map(|m| ok.iter().map(|p| (p.1 - m) * (p.1 - m)).sum::<f64>() / count as f64);
    let mut min: Option<(f64, u64)> = None;
    let mut max: Option<(f64, u64)> = None;
    for &(i, x) in &ok {
        if min.is_none_or(|m| x < m.0) {
            min = Some((x, i as u64));
        }
        if max.is_none_or(|m| x > m.0) {
            max = Some((x, i as u64));
        }
    }
    (count, v.len() as u64 - count, sum, mean, var, min, max)
}

fn check_stats(src: &dyn ChunkSource, values: &[f64]) -> Result<(), TestCaseError> {
    let s = stats(src).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (count, nan, sum, mean, var, min, max) = reference(values);
    prop_assert_eq!(s.count, count);
    prop_assert_eq!(s.nan_count, nan);
    prop_assert_eq!(s.sum, Scalar::F64(sum)); // small integers: exact in any order
    prop_assert_eq!(s.mean(), mean);
    match (s.var(0), var) {
        (Some(a), Some(b)) => {
            prop_assert!((a - b).abs() <= 1e-9 * b.max(1.0), "var {} vs {}", a, b)
        }
        (a, b) => prop_assert_eq!(a, b),
    }
    prop_assert_eq!(s.min, min.map(|m| Scalar::F64(m.0)));
    prop_assert_eq!(s.argmin, min.map(|m| m.1));
    prop_assert_eq!(s.max, max.map(|m| Scalar::F64(m.0)));
    prop_assert_eq!(s.argmax, max.map(|m| m.1));
    Ok(())
}

fn naive_region(shape: &[u64], values: &[f64], r: &Region) -> Vec<f64> {
    let strides = chunkheap::shape::c_strides(shape);
    let n = r.numel() as usize;
    (0..n)
        .map(|k| {
            let mut rem = k as u64;
            let mut flat = 0u64;
            for ax in (0..shape.len()).rev() {
                flat += (r.origin[ax] + rem % r.shape[ax]) * strides[ax];
                rem /= r.shape[ax];
            }
            values[flat as usize]
        })
        .collect()
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn npy_any_order_endian_chunking_matches_reference(c in case()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &c.shape, &c.values, c.fortran, c.big_endian);
        for mode in [ReadMode::Pread, ReadMode::Mmap] {
            let mut src = NpySource::open_with_chunk_bytes(&p, "a.npy", c.chunk_bytes).unwrap();
            src.set_read_mode(mode);
            check_stats(&src, &c.values)?;
            // Whole-array read equals the values in C order.
            let all = src.read_region(&Region::full(&c.shape)).unwrap();
            prop_assert!(same_bits(all.as_slice::<f64>(), &c.values));
        }
    }

    #[test]
    fn zarr_any_chunking_and_codec_matches_reference(c in case()) {
        let dir = tempfile::tempdir().unwrap();
        let npy = dir.path().join("a.npy");
        write_npy(&npy, &c.shape, &c.values, c.fortran, c.big_endian);
        let src = NpySource::open_with_chunk_bytes(&npy, "a.npy", c.chunk_bytes).unwrap();
        let out = dir.path().join("a.zarr").to_string_lossy().into_owned();
        let codec = [Codec::None, Codec::Zstd(1), Codec::Gzip(1)][c.codec as usize];
        let opts = WriteOptions { chunks: Some(c.zarr_chunks.clone()), codec, column: None, ..Default::default() };
        let w = formats::create(&out, chunkheap::DType::F64, &c.shape, &opts).unwrap();
        pipeline::copy(&src, w, &pipeline::no_progress).unwrap();
        let z = formats::open(&out).unwrap();
        check_stats(z.as_ref(), &c.values)?;
        // A sub-box spanning several chunks.
        if !c.shape.contains(&0) {
            let r = Region {
                origin: c.shape.iter().map(|&d| d / 3).collect(),
                shape: c.shape.iter().map(|&d| d - d / 3 - d / 4).collect(),
            };
            if !r.shape.contains(&0) {
                let got = z.read_region(&r).unwrap();
                prop_assert!(same_bits(got.as_slice::<f64>(), &naive_region(&c.shape, &c.values, &r)));
            }
        }
    }
}
