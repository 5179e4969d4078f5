//! Lazy axis permutations (NumPy's `transpose` / `.T`) of any source.
//!
//! [`Transposed`] is a [`ChunkSource`] whose element `(i0, .., iN)` is the source's element with
//! `src[axes[d]] = i[d]`. Nothing is computed up front: reading a box of the result reads the
//! matching box of the source (with the source's own `read_region`) and permutes it in memory,
//! with a cache-blocked transposition of the two axes that swap the contiguous direction. Its
//! chunks are square-ish tiles of about [`DEFAULT_CHUNK_BYTES`], so `formats::create` +
//! `pipeline::copy(&transposed, writer)` writes an out-of-core transpose whose memory is a few
//! tiles per worker whatever the array size.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::formats::DEFAULT_CHUNK_BYTES;
use crate::shape::{ChunkLayout, Region, shape_str};
use crate::storage::{Buffer, Chunk, ChunkSource, SourceInfo};

/// Side of the square blocks of the in-memory transposition: 32 x 32 elements of 8 bytes is
/// 8 KiB of source and 8 KiB of destination, well inside L1.
const BLOCK: usize = 32;

/// A square-ish chunk shape of at most `target_bytes` (at least one element) for an array of
/// `shape`: starting from the whole array, the longest extent is halved until the tile fits.
pub fn square_tile(shape: &[u64], elem: usize, target_bytes: u64) -> Vec<u64> {
    let target = (target_bytes / elem.max(1) as u64).max(1);
    let mut tile: Vec<u64> = shape.iter().map(|&d| d.max(1)).collect();
    while crate::shape::numel(&tile) > target {
        let Some(ax) = (0..tile.len()).max_by_key(|&i| (tile[i], std::cmp::Reverse(i))) else {
            break;
        };
        tile[ax] = tile[ax].div_ceil(2);
    }
    tile
}

/// A lazily transposed source: see the module docs.
pub struct Transposed {
    src: Arc<dyn ChunkSource>,
    axes: Vec<usize>,
    info: SourceInfo,
}

/// Transposes `src` by `axes` (a permutation of `0..ndim`); `None` reverses the axes, like
/// NumPy's `transpose(a)` and `a.T`. Errors (with NumPy's wording) name the axes and the shape.
pub fn transpose(src: Arc<dyn ChunkSource>, axes: Option<&[usize]>) -> Result<Transposed> {
    let info = src.info();
    let nd = info.shape.len();
    let axes: Vec<usize> = match axes {
        None => (0..nd).rev().collect(),
        Some(a) => a.to_vec(),
    };
    if axes.len() != nd {
        return Err(Error::Invalid(format!(
            "{}: axes {axes:?} don't match array of shape {} ({nd} dimensions)",
            info.name,
            shape_str(&info.shape)
        )));
    }
    let mut seen = vec![false; nd];
    for &ax in &axes {
        if ax >= nd {
            return Err(Error::Invalid(format!(
                "{}: axis {ax} is out of bounds for array of dimension {nd}",
                info.name
            )));
        }
        if std::mem::replace(&mut seen[ax], true) {
            return Err(Error::Invalid(format!(
                "{}: repeated axis {ax} in transpose axes {axes:?}",
                info.name
            )));
        }
    }
    let shape: Vec<u64> = axes.iter().map(|&a| info.shape[a]).collect();
    let elem = info.dtype.size();
    let mut tile = square_tile(&shape, elem, DEFAULT_CHUNK_BYTES);
    // Align tile edges with the source's chunk edges where source chunks are smaller, so a tile
    // never reads a source chunk only partly at its borders.
    if let ChunkLayout::Regular { chunk_shape, .. } = &info.layout {
        for (d, &a) in axes.iter().enumerate() {
            let c = chunk_shape[a];
            if c < tile[d] {
                tile[d] = tile[d] / c * c;
            }
        }
    }
    let layout = ChunkLayout::regular(&shape, &tile)?;
    let is_t = axes.iter().copied().eq((0..nd).rev());
    let name = if is_t {
        format!("{}.T", info.name)
    } else {
        format!("transpose({}, {axes:?})", info.name)
    };
    let mut details = info.details.clone();
    details.push(("transpose axes".into(), format!("{axes:?}")));
    let info = SourceInfo {
        name,
        path: info.path.clone(),
        format: info.format,
        dtype: info.dtype,
        shape,
        layout,
        byte_order: crate::dtype::ByteOrder::NATIVE,
        stored_bytes: info.stored_bytes,
        details,
    };
    Ok(Transposed { src, axes, info })
}

impl Transposed {
    /// The permutation: result axis `d` is source axis `axes()[d]`.
    pub fn axes(&self) -> &[usize] {
        &self.axes
    }

    /// The source box holding the elements of result box `region`.
    fn source_region(&self, region: &Region) -> Region {
        let nd = self.axes.len();
        let mut origin = vec![0; nd];
        let mut shape = vec![0; nd];
        for (d, &a) in self.axes.iter().enumerate() {
            origin[a] = region.origin[d];
            shape[a] = region.shape[d];
        }
        Region { origin, shape }
    }
}

impl ChunkSource for Transposed {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        let src_region = self.source_region(region);
        let data = self.src.read_region(&src_region)?;
        if self.axes.iter().enumerate().all(|(d, &a)| d == a) {
            return Ok(data);
        }
        let mut out = Buffer::for_overwrite(data.len())?;
        let shape: Vec<usize> = src_region.shape.iter().map(|&d| d as usize).collect();
        match self.info.dtype.size() {
            1 => permute::<u8>(data.as_slice(), &shape, &self.axes, out.as_mut_slice()),
            2 => permute::<u16>(data.as_slice(), &shape, &self.axes, out.as_mut_slice()),
            4 => permute::<u32>(data.as_slice(), &shape, &self.axes, out.as_mut_slice()),
            _ => permute::<u64>(data.as_slice(), &shape, &self.axes, out.as_mut_slice()),
        }
        Ok(out)
    }
}

/// Writes the dense C-order array `src` of `src_shape`, with its axes permuted by `axes`, into
/// `dst` (dense C order, shape `[src_shape[axes[0]], ..]`). Elements are moved as plain bits.
///
/// Result axes that stay adjacent in the source are merged and unit axes dropped first, so e.g.
/// `(2, 0, 1)` on `(a, b, c)` is one `(a*b, c)` transpose. If the innermost result axis is
/// contiguous in the source, contiguous runs are copied; otherwise the two axes that carry the
/// contiguous directions (source stride 1, result stride 1) are transposed in `BLOCK`-square
/// blocks for every index of the remaining axes.
pub fn permute<T: bytemuck::Pod>(src: &[T], src_shape: &[usize], axes: &[usize], dst: &mut [T]) {
    let n: usize = src_shape.iter().product();
    debug_assert_eq!(src.len(), n);
    debug_assert_eq!(dst.len(), n);
    if n == 0 {
        return;
    }
    let nd = src_shape.len();
    let mut src_strides = vec![1usize; nd];
    for i in (0..nd.saturating_sub(1)).rev() {
        src_strides[i] = src_strides[i + 1] * src_shape[i + 1];
    }
    // (extent, source stride) per result axis, merged and without unit axes.
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(nd);
    for &a in axes {
        let ext = src_shape[a];
        if ext == 1 {
            continue;
        }
        match dims.last_mut() {
            // The previous kept axis is the next outer one in the source (only unit axes between).
            Some(last) if last.1 == src_strides[a] * ext => {
                *last = (last.0 * ext, src_strides[a]);
            }
            _ => dims.push((ext, src_strides[a])),
        }
    }
    let nd = dims.len();
    if nd <= 1 || dims[nd - 1].1 == 1 {
        // The innermost result axis is contiguous in the source: copy runs.
        let run = dims.last().map_or(1, |d| d.0);
        let outer = &dims[..nd.saturating_sub(1)];
        for_each_index(outer, |s_off, d_run| {
            dst[d_run * run..(d_run + 1) * run].copy_from_slice(&src[s_off..s_off + run]);
        });
        return;
    }
    // Result strides (dense C order over the merged dims).
    let mut dst_strides = vec![1usize; nd];
    for i in (0..nd - 1).rev() {
        dst_strides[i] = dst_strides[i + 1] * dims[i + 1].0;
    }
    // q: the result axis that is contiguous in the source; l: the innermost result axis.
    let q = dims
        .iter()
        .position(|d| d.1 == 1)
        .expect("some axis has stride 1");
    let l = nd - 1;
    let (nq, oq) = (dims[q].0, dst_strides[q]);
    let (nl, sl) = (dims[l].0, dims[l].1);
    let others: Vec<(usize, usize, usize)> = (0..nd)
        .filter(|&i| i != q && i != l)
        .map(|i| (dims[i].0, dims[i].1, dst_strides[i]))
        .collect();
    let mut idx = vec![0usize; others.len()];
    loop {
        let s_base: usize = others.iter().zip(&idx).map(|(o, &i)| i * o.1).sum();
        let d_base: usize = others.iter().zip(&idx).map(|(o, &i)| i * o.2).sum();
        for q0 in (0..nq).step_by(BLOCK) {
            let q1 = (q0 + BLOCK).min(nq);
            for l0 in (0..nl).step_by(BLOCK) {
                let l1 = (l0 + BLOCK).min(nl);
                for iq in q0..q1 {
                    let drow = &mut dst[d_base + iq * oq + l0..d_base + iq * oq + l1];
                    for (il, d) in (l0..l1).zip(drow.iter_mut()) {
                        *d = src[s_base + iq + il * sl];
                    }
                }
            }
        }
        if !next_index(&mut idx, others.iter().map(|o| o.0)) {
            return;
        }
    }
}

/// Calls `f(source offset, flat result index)` for every index of `dims` (extent, source stride)
/// in C order; one call with `(0, 0)` when `dims` is empty.
fn for_each_index(dims: &[(usize, usize)], mut f: impl FnMut(usize, usize)) {
    let mut idx = vec![0usize; dims.len()];
    let mut flat = 0;
    loop {
        let s: usize = dims.iter().zip(&idx).map(|(d, &i)| i * d.1).sum();
        f(s, flat);
        flat += 1;
        if !next_index(&mut idx, dims.iter().map(|d| d.0)) {
            return;
        }
    }
}

/// Advances an odometer over `extents` (last fastest); false when it wraps around.
fn next_index(idx: &mut [usize], extents: impl DoubleEndedIterator<Item = usize>) -> bool {
    let extents: Vec<usize> = extents.collect();
    for ax in (0..idx.len()).rev() {
        idx[ax] += 1;
        if idx[ax] < extents[ax] {
            return true;
        }
        idx[ax] = 0;
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dtype::{DType, Element};
    use crate::shape::copy_box;
    use crate::storage::{ArrayWriter, Format};
    use proptest::prelude::*;
    use std::sync::Mutex;

    /// An in-memory chunked array for tests: any dtype, shape and regular chunking.
    pub(crate) struct MemSource {
        info: SourceInfo,
        data: Vec<u8>,
    }

    impl MemSource {
        pub(crate) fn new<T: Element>(values: &[T], shape: &[u64], chunks: &[u64]) -> MemSource {
            assert_eq!(values.len() as u64, crate::shape::numel(shape));
            let info = SourceInfo {
                name: "mem".into(),
                path: "mem".into(),
                format: Format::Npy,
                dtype: T::DTYPE,
                shape: shape.to_vec(),
                layout: ChunkLayout::regular(shape, chunks).unwrap(),
                byte_order: crate::dtype::ByteOrder::NATIVE,
                stored_bytes: std::mem::size_of_val(values) as u64,
                details: vec![],
            };
            MemSource {
                info,
                data: bytemuck::cast_slice(values).to_vec(),
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
            copy_box(&self.data, &full, data.bytes_mut(), &region, &region, elem);
            Ok(Chunk {
                region,
                dtype: self.info.dtype,
                data,
            })
        }
    }

    /// Where a [`MemWriter`]'s bytes end up: chunks written so far and the assembled array.
    pub(crate) type Written = Arc<Mutex<(usize, Vec<u8>)>>;

    /// An in-memory writer for tests: checks chunks arrive once each, in order, and assembles them.
    pub(crate) struct MemWriter {
        layout: ChunkLayout,
        elem: usize,
        state: Written,
    }

    impl MemWriter {
        /// A writer of `shape` cut into `chunks`, and the handle its bytes end up in.
        pub(crate) fn create(
            dtype: DType,
            shape: &[u64],
            chunks: &[u64],
        ) -> (Box<dyn ArrayWriter>, Written) {
            let n = crate::shape::numel(shape) as usize * dtype.size();
            let state = Arc::new(Mutex::new((0, vec![0xAB; n])));
            let w = MemWriter {
                layout: ChunkLayout::regular(shape, chunks).unwrap(),
                elem: dtype.size(),
                state: Arc::clone(&state),
            };
            (Box::new(w), state)
        }
    }

    impl ArrayWriter for MemWriter {
        fn layout(&self) -> &ChunkLayout {
            &self.layout
        }

        fn write(&self, index: usize, encoded: &[u8]) -> Result<()> {
            let mut s = self.state.lock().unwrap();
            assert_eq!(s.0, index, "chunks written out of order");
            s.0 += 1;
            let region = self.layout.chunk_region(index);
            assert_eq!(encoded.len(), region.numel() as usize * self.elem);
            let full = Region::full(&self.layout.shape());
            copy_box(encoded, &region, &mut s.1, &full, &region, self.elem);
            Ok(())
        }

        fn finish(self: Box<Self>) -> Result<()> {
            let s = self.state.lock().unwrap();
            assert_eq!(s.0, self.layout.num_chunks(), "not every chunk was written");
            Ok(())
        }
    }

    /// The naive permutation: result element at multi-index `o` is source element `s` with
    /// `s[axes[d]] = o[d]`.
    fn naive(src: &[u64], shape: &[u64], axes: &[usize]) -> Vec<u64> {
        let nd = shape.len();
        let out_shape: Vec<u64> = axes.iter().map(|&a| shape[a]).collect();
        let strides = crate::shape::c_strides(shape);
        let n = crate::shape::numel(shape) as usize;
        let mut out = Vec::with_capacity(n);
        for flat in 0..n as u64 {
            let mut rem = flat;
            let mut o = vec![0u64; nd];
            for d in (0..nd).rev() {
                o[d] = rem % out_shape[d];
                rem /= out_shape[d];
            }
            let s: u64 = (0..nd).map(|d| o[d] * strides[axes[d]]).sum();
            out.push(src[s as usize]);
        }
        out
    }

    fn case() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, Vec<usize>)> {
        prop::collection::vec(0u64..7, 0..5).prop_flat_map(|shape| {
            let nd = shape.len();
            let chunks = shape.iter().map(|&d| 1..=d.max(1)).collect::<Vec<_>>();
            let perm = Just((0..nd).collect::<Vec<usize>>()).prop_shuffle();
            (Just(shape), chunks, perm)
        })
    }

    /// Values of every width from one seed: element `i` of a `T` array is `i * 2654435761 + 7`
    /// truncated, so neighbours differ in every byte.
    fn values<T: Element>(n: usize) -> Vec<T> {
        (0..n as u64)
            .map(|i| {
                let v = i.wrapping_mul(2_654_435_761).wrapping_add(7);
                bytemuck::cast_slice::<u64, T>(&[v])[0]
            })
            .collect()
    }

    fn check_permutation<T: Element>(shape: &[u64], chunks: &[u64], axes: &[usize]) {
        let n = crate::shape::numel(shape) as usize;
        let vals: Vec<T> = values(n);
        let src: Arc<dyn ChunkSource> = Arc::new(MemSource::new(&vals, shape, chunks));
        let t = transpose(src, Some(axes)).unwrap();
        let out_shape: Vec<u64> = axes.iter().map(|&a| shape[a]).collect();
        assert_eq!(t.info().shape, out_shape);
        let wide: Vec<u64> = vals.iter().map(|v| index_of(v, &vals)).collect();
        let want: Vec<u64> = naive(&wide, shape, axes);
        let want: Vec<T> = want.iter().map(|&i| vals[i as usize]).collect();
        // Whole array through read_region.
        let full = t.read_region(&Region::full(&out_shape)).unwrap();
        assert_eq!(full.as_slice::<T>(), &want[..]);
        // Every chunk covers its region.
        for i in 0..t.info().layout.num_chunks() {
            let c = t.read_chunk(i).unwrap();
            let mut expect = vec![0u8; c.data.len()];
            copy_box(
                bytemuck::cast_slice(&want),
                &Region::full(&out_shape),
                &mut expect,
                &c.region,
                &c.region,
                T::DTYPE.size(),
            );
            assert_eq!(c.data.bytes(), &expect[..], "chunk {i}");
        }
    }

    /// Position of `v` in `vals` (values are distinct for the sizes tested).
    fn index_of<T: Element>(v: &T, vals: &[T]) -> u64 {
        let bytes = bytemuck::bytes_of(v);
        vals.iter()
            .position(|x| bytemuck::bytes_of(x) == bytes)
            .unwrap() as u64
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn matches_naive_permutation((shape, chunks, axes) in case()) {
            check_permutation::<u64>(&shape, &chunks, &axes);
            check_permutation::<u16>(&shape, &chunks, &axes);
        }

        #[test]
        fn copy_writes_the_transpose(
            rows in 1u64..80, cols in 1u64..80, cr in 1u64..40, cc in 1u64..40,
            wr in 1u64..50, wc in 1u64..50, threads in prop::sample::select(vec![1usize, 2, 7]),
        ) {
            let vals: Vec<f64> = (0..rows * cols).map(|i| i as f64 * 0.5 - 3.0).collect();
            let src: Arc<dyn ChunkSource> =
                Arc::new(MemSource::new(&vals, &[rows, cols], &[cr, cc]));
            let t = transpose(src, None).unwrap();
            let (w, out) = MemWriter::create(DType::F64, &[cols, rows], &[wc.min(cols), wr.min(rows)]);
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| crate::pipeline::copy(&t, w, &crate::pipeline::no_progress)).unwrap();
            let got: Vec<f64> = out.lock().unwrap().1
                .chunks_exact(8)
                .map(|b| f64::from_ne_bytes(b.try_into().unwrap()))
                .collect();
            for i in 0..cols as usize {
                for j in 0..rows as usize {
                    prop_assert_eq!(got[i * rows as usize + j], vals[j * cols as usize + i]);
                }
            }
        }
    }

    #[test]
    fn blocked_paths_of_every_width() {
        // Larger than BLOCK on both axes, odd sizes, and a batched 2-D transpose.
        check_permutation::<u8>(&[70, 45], &[13, 45], &[1, 0]);
        check_permutation::<u32>(&[33, 65], &[33, 7], &[1, 0]);
        check_permutation::<u64>(&[3, 40, 37], &[2, 9, 37], &[0, 2, 1]);
        check_permutation::<u16>(&[5, 1, 38, 3], &[5, 1, 38, 3], &[2, 1, 3, 0]);
    }

    #[test]
    fn merged_axes_and_layout() {
        // (2, 0, 1) on (a, b, c) is the (a*b, c) matrix transposed.
        check_permutation::<u32>(&[4, 6, 5], &[1, 6, 5], &[2, 0, 1]);
        let vals: Vec<f64> = vec![0.0; 4096 * 1024];
        let src: Arc<dyn ChunkSource> =
            Arc::new(MemSource::new(&vals, &[4096, 1024], &[256, 1024]));
        let t = transpose(src, None).unwrap();
        assert_eq!(t.info().name, "mem.T");
        // 8 MiB tiles of f64 are 1 Mi elements: square-ish, aligned to the source's 256 rows.
        assert_eq!(
            t.info().layout,
            ChunkLayout::regular(&[1024, 4096], &[1024, 1024]).unwrap()
        );
    }

    #[test]
    fn tile_shapes() {
        assert_eq!(square_tile(&[8192, 8192], 8, 8 << 20), vec![1024, 1024]);
        assert_eq!(square_tile(&[10, 1 << 30], 4, 8 << 20), vec![10, 1 << 17]);
        assert_eq!(square_tile(&[], 8, 8), Vec::<u64>::new());
        assert_eq!(square_tile(&[0, 5], 8, 8), vec![1, 1]);
    }

    #[test]
    fn bad_axes_are_named() {
        let vals = vec![0u8; 6];
        let src: Arc<dyn ChunkSource> = Arc::new(MemSource::new(&vals, &[2, 3], &[1, 3]));
        let e = |axes: &[usize]| {
            transpose(Arc::clone(&src), Some(axes))
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            e(&[0]),
            "mem: axes [0] don't match array of shape (2, 3) (2 dimensions)"
        );
        assert_eq!(
            e(&[0, 2]),
            "mem: axis 2 is out of bounds for array of dimension 2"
        );
        assert_eq!(e(&[1, 1]), "mem: repeated axis 1 in transpose axes [1, 1]");
        let id = transpose(Arc::clone(&src), Some(&[0, 1])).unwrap();
        assert_eq!(id.info().shape, vec![2, 3]);
        assert_eq!(id.info().name, "transpose(mem, [0, 1])");
    }
}
