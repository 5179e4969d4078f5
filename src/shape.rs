//! Shapes, regions and chunk grids: pure index arithmetic, no I/O.
//!
//! Arrays are N-dimensional (0-d up to any rank) in C order. A [`ChunkLayout`] cuts an array into
//! chunks, enumerated in C order of the grid; each chunk covers a [`Region`] of the array.

use crate::error::{Error, Result};

/// Number of elements of `shape` (1 for a 0-d array), or an error on overflow.
pub fn checked_numel(shape: &[u64]) -> Result<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "shape {shape:?} has more elements than fit in 64 bits"
            ))
        })
}

/// Number of elements of `shape` (1 for a 0-d array). The shape must be valid.
pub fn numel(shape: &[u64]) -> u64 {
    shape.iter().product()
}

/// Formats a shape the NumPy way: `(3,)`, `(2, 3)`, `()`.
pub fn shape_str(shape: &[u64]) -> String {
    match shape {
        [] => "()".to_string(),
        [a] => format!("({a},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Parses `N[,M,...]` (also `N x M`); an empty string is the 0-d shape.
pub fn parse_shape(s: &str) -> Result<Vec<u64>> {
    let s = s.trim().trim_start_matches('(').trim_end_matches(')');
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let shape =
        s.split([',', 'x'])
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.trim().replace('_', "").parse::<u64>().map_err(|_| {
                    Error::Invalid(format!("bad dimension {:?} in shape {s:?}", p.trim()))
                })
            })
            .collect::<Result<Vec<u64>>>()?;
    checked_numel(&shape)?;
    Ok(shape)
}

/// C-order strides (in elements) of `shape`.
pub fn c_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// A box inside an array: `origin[i] .. origin[i] + shape[i]` on every axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First index on each axis.
    pub origin: Vec<u64>,
    /// Extent on each axis.
    pub shape: Vec<u64>,
}

impl Region {
    /// The whole of an array of `shape`.
    pub fn full(shape: &[u64]) -> Region {
        Region {
            origin: vec![0; shape.len()],
            shape: shape.to_vec(),
        }
    }

    /// Number of elements in the box.
    pub fn numel(&self) -> u64 {
        numel(&self.shape)
    }

    /// The flat C-order index, in an array of `array_shape`, of the element at C-order position
    /// `local` inside this box.
    pub fn global_flat_index(&self, local: u64, array_shape: &[u64]) -> u64 {
        let mut rem = local;
        let mut flat = 0u64;
        let mut stride = 1u64;
        for ax in (0..self.shape.len()).rev() {
            let ext = self.shape[ax].max(1);
            let i = rem % ext;
            rem /= ext;
            flat += (self.origin[ax] + i) * stride;
            stride *= array_shape[ax];
        }
        flat
    }

    /// The intersection with `other`, or `None` when they do not overlap.
    pub fn intersect(&self, other: &Region) -> Option<Region> {
        let mut origin = Vec::with_capacity(self.shape.len());
        let mut shape = Vec::with_capacity(self.shape.len());
        for ax in 0..self.shape.len() {
            let lo = self.origin[ax].max(other.origin[ax]);
            let hi = (self.origin[ax] + self.shape[ax]).min(other.origin[ax] + other.shape[ax]);
            if hi <= lo {
                return None;
            }
            origin.push(lo);
            shape.push(hi - lo);
        }
        Some(Region { origin, shape })
    }
}

/// How an array is cut into chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkLayout {
    /// A regular N-d grid: every chunk has `chunk_shape`, except partial chunks at the far edges.
    Regular {
        /// The array's shape.
        shape: Vec<u64>,
        /// The chunk shape (every entry at least 1).
        chunk_shape: Vec<u64>,
    },
    /// A 1-D array cut at the given boundaries (Arrow record batches): chunk `i` covers
    /// `bounds[i] .. bounds[i + 1]`.
    Ranges {
        /// Monotone boundaries starting at 0 and ending at the array length.
        bounds: Vec<u64>,
    },
}

impl ChunkLayout {
    /// A regular grid; zero entries in `chunk_shape` are rejected.
    pub fn regular(shape: &[u64], chunk_shape: &[u64]) -> Result<ChunkLayout> {
        if shape.len() != chunk_shape.len() {
            return Err(Error::Invalid(format!(
                "chunk shape {chunk_shape:?} has {} dimensions but the array {} has {}",
                chunk_shape.len(),
                shape_str(shape),
                shape.len()
            )));
        }
        if chunk_shape.contains(&0) {
            return Err(Error::Invalid(format!(
                "chunk shape {chunk_shape:?} has a zero entry"
            )));
        }
        Ok(ChunkLayout::Regular {
            shape: shape.to_vec(),
            chunk_shape: chunk_shape.to_vec(),
        })
    }

    /// The grid whose chunks are contiguous C-order byte ranges of about `target_bytes`:
    /// `[1, .., 1, k, full, .., full]`. Used for `.npy` files and as the default output chunking.
    pub fn contiguous(shape: &[u64], elem_size: usize, target_bytes: u64) -> ChunkLayout {
        let target = (target_bytes / elem_size as u64).max(1);
        let mut chunk = shape.iter().map(|&d| d.max(1)).collect::<Vec<_>>();
        let mut inner = 1u64;
        for ax in (0..shape.len()).rev() {
            let d = shape[ax].max(1);
            if inner.saturating_mul(d) <= target {
                inner *= d;
                continue;
            }
            chunk[ax] = (target / inner).max(1);
            for c in chunk.iter_mut().take(ax) {
                *c = 1;
            }
            break;
        }
        ChunkLayout::Regular {
            shape: shape.to_vec(),
            chunk_shape: chunk,
        }
    }

    /// The array's shape.
    pub fn shape(&self) -> Vec<u64> {
        match self {
            ChunkLayout::Regular { shape, .. } => shape.clone(),
            ChunkLayout::Ranges { bounds } => vec![*bounds.last().unwrap_or(&0)],
        }
    }

    /// Chunks along each axis.
    pub fn grid_shape(&self) -> Vec<u64> {
        match self {
            ChunkLayout::Regular { shape, chunk_shape } => shape
                .iter()
                .zip(chunk_shape)
                .map(|(&d, &c)| d.div_ceil(c))
                .collect(),
            ChunkLayout::Ranges { bounds } => vec![bounds.len().saturating_sub(1) as u64],
        }
    }

    /// Elements in the largest chunk.
    pub fn max_chunk_elems(&self) -> u64 {
        match self {
            ChunkLayout::Regular { shape, chunk_shape } => shape
                .iter()
                .zip(chunk_shape)
                .map(|(&d, &c)| d.min(c))
                .product(),
            ChunkLayout::Ranges { bounds } => {
                bounds.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
            }
        }
    }

    /// Total number of chunks (0 when the array is empty; 1 for a 0-d array).
    pub fn num_chunks(&self) -> usize {
        numel(&self.grid_shape()) as usize
    }

    /// The grid coordinates of chunk `index` (C order over the grid).
    pub fn chunk_coords(&self, index: usize) -> Vec<u64> {
        let grid = self.grid_shape();
        let mut rem = index as u64;
        let mut coords = vec![0u64; grid.len()];
        for ax in (0..grid.len()).rev() {
            coords[ax] = rem % grid[ax];
            rem /= grid[ax];
        }
        coords
    }

    /// The region of the array covered by chunk `index` (clipped at the array's edge).
    pub fn chunk_region(&self, index: usize) -> Region {
        match self {
            ChunkLayout::Regular { shape, chunk_shape } => {
                let coords = self.chunk_coords(index);
                let origin: Vec<u64> = coords
                    .iter()
                    .zip(chunk_shape)
                    .map(|(&g, &c)| g * c)
                    .collect();
                let ext = origin
                    .iter()
                    .zip(chunk_shape)
                    .zip(shape)
                    .map(|((&o, &c), &d)| c.min(d - o))
                    .collect();
                Region { origin, shape: ext }
            }
            ChunkLayout::Ranges { bounds } => Region {
                origin: vec![bounds[index]],
                shape: vec![bounds[index + 1] - bounds[index]],
            },
        }
    }

    /// Indices of the chunks that overlap `region`, in C order of the grid.
    pub fn chunks_overlapping(&self, region: &Region) -> Vec<usize> {
        if region.shape.contains(&0) {
            return Vec::new();
        }
        match self {
            ChunkLayout::Regular { chunk_shape, .. } => {
                let grid = self.grid_shape();
                let lo: Vec<u64> = region
                    .origin
                    .iter()
                    .zip(chunk_shape)
                    .map(|(&o, &c)| o / c)
                    .collect();
                let hi: Vec<u64> = region
                    .origin
                    .iter()
                    .zip(&region.shape)
                    .zip(chunk_shape)
                    .map(|((&o, &s), &c)| (o + s - 1) / c)
                    .collect();
                let mut out = Vec::new();
                let mut cur = lo.clone();
                loop {
                    let mut idx = 0u64;
                    for ax in 0..grid.len() {
                        idx = idx * grid[ax] + cur[ax];
                    }
                    out.push(idx as usize);
                    // Odometer increment.
                    let mut ax = grid.len();
                    loop {
                        if ax == 0 {
                            return out;
                        }
                        ax -= 1;
                        if cur[ax] < hi[ax] {
                            cur[ax] += 1;
                            break;
                        }
                        cur[ax] = lo[ax];
                    }
                }
            }
            ChunkLayout::Ranges { bounds } => {
                let start = region.origin[0];
                let end = start + region.shape[0];
                let first = bounds.partition_point(|&b| b <= start).saturating_sub(1);
                (first..bounds.len() - 1)
                    .take_while(|&i| bounds[i] < end)
                    .filter(|&i| bounds[i + 1] > bounds[i])
                    .collect()
            }
        }
    }

    /// A short description: `regular 1000x1000 (4x4 chunks)` or `1-D ranges (12 batches)`.
    pub fn describe(&self) -> String {
        match self {
            ChunkLayout::Regular { chunk_shape, .. } => format!(
                "regular {} ({} chunks: {})",
                shape_str(chunk_shape),
                self.num_chunks(),
                shape_str(&self.grid_shape())
            ),
            ChunkLayout::Ranges { bounds } => {
                format!("record batches ({} chunks)", bounds.len().saturating_sub(1))
            }
        }
    }
}

/// Copies the elements of box `part` (in array coordinates) from a dense C-order buffer holding
/// box `src_box` into a dense C-order buffer holding box `dst_box`. `elem` is the element size;
/// `part` must lie inside both boxes.
pub fn copy_box(
    src: &[u8],
    src_box: &Region,
    dst: &mut [u8],
    dst_box: &Region,
    part: &Region,
    elem: usize,
) {
    let nd = part.shape.len();
    if nd == 0 {
        dst[..elem].copy_from_slice(&src[..elem]);
        return;
    }
    if part.numel() == 0 {
        return;
    }
    let s_strides = c_strides(&src_box.shape);
    let d_strides = c_strides(&dst_box.shape);
    let run = part.shape[nd - 1] as usize * elem;
    let outer = &part.shape[..nd - 1];
    let mut idx = vec![0u64; nd - 1];
    loop {
        let mut s_off = 0u64;
        let mut d_off = 0u64;
        for ax in 0..nd {
            let i = if ax < nd - 1 { idx[ax] } else { 0 };
            let a = part.origin[ax] + i;
            s_off += (a - src_box.origin[ax]) * s_strides[ax];
            d_off += (a - dst_box.origin[ax]) * d_strides[ax];
        }
        let s = s_off as usize * elem;
        let d = d_off as usize * elem;
        dst[d..d + run].copy_from_slice(&src[s..s + run]);
        let mut ax = nd - 1;
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            idx[ax] += 1;
            if idx[ax] < outer[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// Reorders a dense buffer stored in Fortran order (first axis fastest) into C order.
pub fn fortran_to_c(src: &[u8], shape: &[u64], elem: usize) -> Vec<u8> {
    let n = numel(shape) as usize;
    let mut dst = vec![0u8; n * elem];
    if n == 0 {
        return dst;
    }
    let nd = shape.len();
    if nd <= 1 {
        dst.copy_from_slice(&src[..n * elem]);
        return dst;
    }
    // Fortran strides: axis 0 has stride 1.
    let mut f_strides = vec![1usize; nd];
    for ax in 1..nd {
        f_strides[ax] = f_strides[ax - 1] * shape[ax - 1] as usize;
    }
    let last = shape[nd - 1] as usize;
    let last_stride = f_strides[nd - 1];
    let mut idx = vec![0usize; nd - 1];
    let mut d = 0usize;
    loop {
        let base: usize = idx.iter().zip(&f_strides).map(|(&i, &s)| i * s).sum();
        for j in 0..last {
            let s = (base + j * last_stride) * elem;
            dst[d..d + elem].copy_from_slice(&src[s..s + elem]);
            d += elem;
        }
        let mut ax = nd - 1;
        loop {
            if ax == 0 {
                return dst;
            }
            ax -= 1;
            idx[ax] += 1;
            if idx[ax] < shape[ax] as usize {
                break;
            }
            idx[ax] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_grid() {
        let l = ChunkLayout::contiguous(&[10, 4], 8, 64);
        assert_eq!(
            l,
            ChunkLayout::Regular {
                shape: vec![10, 4],
                chunk_shape: vec![2, 4]
            }
        );
        let l = ChunkLayout::contiguous(&[3, 100], 8, 64);
        assert_eq!(
            l,
            ChunkLayout::Regular {
                shape: vec![3, 100],
                chunk_shape: vec![1, 8]
            }
        );
        let l = ChunkLayout::contiguous(&[], 8, 64);
        assert_eq!(l.num_chunks(), 1);
        assert_eq!(
            l.chunk_region(0),
            Region {
                origin: vec![],
                shape: vec![]
            }
        );
        let l = ChunkLayout::contiguous(&[0, 5], 8, 64);
        assert_eq!(l.num_chunks(), 0);
    }

    #[test]
    fn regions_and_overlap() {
        let l = ChunkLayout::regular(&[5, 7], &[2, 3]).unwrap();
        assert_eq!(l.grid_shape(), vec![3, 3]);
        assert_eq!(
            l.chunk_region(8),
            Region {
                origin: vec![4, 6],
                shape: vec![1, 1]
            }
        );
        let r = Region {
            origin: vec![1, 2],
            shape: vec![2, 2],
        };
        assert_eq!(l.chunks_overlapping(&r), vec![0, 1, 3, 4]);
        let b = ChunkLayout::Ranges {
            bounds: vec![0, 3, 3, 10],
        };
        let r = Region {
            origin: vec![2],
            shape: vec![5],
        };
        assert_eq!(b.chunks_overlapping(&r), vec![0, 2]);
    }

    #[test]
    fn flat_index() {
        let r = Region {
            origin: vec![1, 2],
            shape: vec![2, 3],
        };
        // local 4 = (1, 1) -> global (2, 3) in a 5x7 array = 17.
        assert_eq!(r.global_flat_index(4, &[5, 7]), 17);
    }

    #[test]
    fn fortran_reorder() {
        // C array [[0,1,2],[3,4,5]] stored in Fortran order is 0,3,1,4,2,5.
        let f: Vec<u8> = vec![0, 3, 1, 4, 2, 5];
        assert_eq!(fortran_to_c(&f, &[2, 3], 1), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn box_copy() {
        let src: Vec<u8> = (0..12).collect(); // 3x4
        let sb = Region::full(&[3, 4]);
        let part = Region {
            origin: vec![1, 1],
            shape: vec![2, 2],
        };
        let mut dst = vec![0u8; 4];
        copy_box(&src, &sb, &mut dst, &part.clone(), &part, 1);
        assert_eq!(dst, vec![5, 6, 9, 10]);
    }
}
