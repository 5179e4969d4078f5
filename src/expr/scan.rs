//! Out-of-core scans (`cumsum`, `cumprod`), flattened or along an axis.
//!
//! A scan is a lazy source computed in two parallel passes: the first reduces every chunk to its
//! total (along the axis, per position of the other axes) and folds the totals in order into
//! each chunk's carry-in; afterwards any chunk can be produced independently as its carry plus
//! its local running sum. The first pass runs on first access and its carries (one value per
//! chunk and position across the axis) are reserved in the budget.

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::lazy::{Node, Src, computed_source_info};
use super::num::Num;
use super::views::read_flat;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::DEFAULT_CHUNK_BYTES;
use crate::memory::Reservation;
use crate::shape::{ChunkLayout, Region, numel};
use crate::storage::{Buffer, Chunk, ChunkSource, SourceInfo};

/// Which scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanOp {
    /// Running sum.
    CumSum,
    /// Running product.
    CumProd,
}

/// Every chunk's carry-in values (bytes of the output dtype), where each chunk's start, and the
/// budget they hold.
type Carries = (Vec<u8>, Vec<usize>, Reservation);

/// A lazy scan of a source.
pub struct Scan {
    src: Src,
    op: ScanOp,
    axis: Option<usize>,
    info: SourceInfo,
    carries: OnceLock<std::result::Result<Carries, String>>,
}

/// NumPy's result dtype of `cumsum`/`cumprod`.
pub fn scan_dtype(d: DType) -> DType {
    match d {
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => DType::U64,
        DType::F32 | DType::F64 => d,
        _ => DType::I64,
    }
}

impl Scan {
    /// `cumsum`/`cumprod` of `src`, flattened (`axis = None`, NumPy's default) or along `axis`.
    pub fn build(src: &Src, op: ScanOp, axis: Option<usize>) -> Result<Src> {
        let info = src.info();
        let dtype = scan_dtype(info.dtype);
        let src = Node::cast(src, dtype);
        let (shape, layout) = match axis {
            None => {
                let n = numel(&info.shape);
                let shape = vec![n];
                let l = ChunkLayout::contiguous(&shape, dtype.size(), DEFAULT_CHUNK_BYTES);
                (shape, l)
            }
            Some(a) => {
                if a >= info.shape.len() {
                    return Err(Error::Invalid(format!(
                        "axis {a} is out of bounds for array of dimension {}",
                        info.shape.len()
                    )));
                }
                let l = match &src.info().layout {
                    l @ ChunkLayout::Regular { .. } => l.clone(),
                    ChunkLayout::Ranges { .. } => {
                        ChunkLayout::contiguous(&info.shape, dtype.size(), DEFAULT_CHUNK_BYTES)
                    }
                };
                (info.shape.clone(), l)
            }
        };
        let name = format!(
            "{}({}{})",
            match op {
                ScanOp::CumSum => "cumsum",
                ScanOp::CumProd => "cumprod",
            },
            info.name,
            axis.map(|a| format!(", axis={a}")).unwrap_or_default()
        );
        Ok(Arc::new(Scan {
            src,
            op,
            axis,
            info: computed_source_info(name, dtype, shape, layout),
            carries: OnceLock::new(),
        }))
    }

    /// The input region feeding output chunk `region`.
    fn read_input(&self, region: &Region) -> Result<Buffer> {
        match self.axis {
            None => {
                let es = self.info.dtype.size();
                let a = region.origin[0];
                let b = a + region.shape[0];
                let mut out = Buffer::for_overwrite((b - a) as usize * es)?;
                read_flat(self.src.as_ref(), a, b, out.bytes_mut())?;
                Ok(out)
            }
            Some(_) => self.src.read_region(region),
        }
    }

    /// `(outer, n, inner)` of a region for the scan axis.
    fn dims(&self, region: &Region) -> (usize, usize, usize) {
        match self.axis {
            None => (1, region.shape[0] as usize, 1),
            Some(a) => (
                numel(&region.shape[..a]) as usize,
                region.shape[a] as usize,
                numel(&region.shape[a + 1..]) as usize,
            ),
        }
    }

    fn carries(&self) -> Result<(&[u8], &[usize])> {
        let r = self.carries.get_or_init(|| {
            crate::with_dtype!(self.info.dtype, T => self.compute_carries::<T>())
                .map_err(|e| e.to_string())
        });
        match r {
            Ok((v, offsets, _)) => Ok((v, offsets)),
            Err(e) => Err(Error::Invalid(e.clone())),
        }
    }

    /// Pass 1: each chunk's totals, then each chunk's carry-in (exclusive prefix along the axis).
    fn compute_carries<T: Num>(&self) -> Result<Carries> {
        let layout = &self.info.layout;
        let nchunks = layout.num_chunks();
        let sizes: Vec<usize> = (0..nchunks)
            .map(|i| {
                let r = layout.chunk_region(i);
                let (o, _, inn) = self.dims(&r);
                o * inn
            })
            .collect();
        let total: usize = sizes.iter().sum();
        let res = crate::memory::global()
            .reserve((total * std::mem::size_of::<T>()) as u64, "scan carries")?;
        let identity = match self.op {
            ScanOp::CumSum => T::ZERO,
            ScanOp::CumProd => T::from_i128(1),
        };
        let op = self.op;
        let totals: Vec<Vec<T>> = (0..nchunks)
            .into_par_iter()
            .map(|i| -> Result<Vec<T>> {
                let region = layout.chunk_region(i);
                let data = self.read_input(&region)?;
                let x: &[T] = data.as_slice();
                let (outer, n, inner) = self.dims(&region);
                let mut t = vec![identity; outer * inner];
                for o in 0..outer {
                    for j in 0..n {
                        let row = &x[(o * n + j) * inner..(o * n + j + 1) * inner];
                        for (a, &v) in t[o * inner..(o + 1) * inner].iter_mut().zip(row) {
                            *a = combine(op, *a, v);
                        }
                    }
                }
                Ok(t)
            })
            .collect::<Result<_>>()?;
        // Exclusive prefix over chunks along the axis (chunk grid coordinate on that axis).
        let grid = layout.grid_shape();
        let mut carries: Vec<Vec<T>> = sizes.iter().map(|&s| vec![identity; s]).collect();
        match self.axis {
            None => {
                let mut acc = identity;
                for i in 0..nchunks {
                    carries[i][0] = acc;
                    acc = combine(op, acc, totals[i][0]);
                }
            }
            Some(a) => {
                // Chunk i's predecessor along the axis has grid coordinate - 1 on axis a.
                let stride: usize = grid[a + 1..].iter().product::<u64>() as usize;
                for i in 0..nchunks {
                    let coords = layout.chunk_coords(i);
                    if coords[a] == 0 {
                        continue;
                    }
                    let p = i - stride;
                    let (prev_c, prev_t) = (carries[p].clone(), &totals[p]);
                    for (k, c) in carries[i].iter_mut().enumerate() {
                        *c = combine(op, prev_c[k], prev_t[k]);
                    }
                }
            }
        }
        let mut offsets = Vec::with_capacity(nchunks);
        let mut at = 0;
        for s in &sizes {
            offsets.push(at);
            at += s;
        }
        let flat: Vec<T> = carries.into_iter().flatten().collect();
        Ok((bytemuck::cast_slice(&flat).to_vec(), offsets, res))
    }
}

#[inline]
fn combine<T: Num>(op: ScanOp, a: T, b: T) -> T {
    match op {
        ScanOp::CumSum => a.add(b),
        ScanOp::CumProd => a.mul(b),
    }
}

impl ChunkSource for Scan {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        let (carries, offsets) = self.carries()?;
        let layout = &self.info.layout;
        let region = layout.chunk_region(index);
        let (outer, n, inner) = self.dims(&region);
        // Offset of this chunk's carries.
        let before = offsets[index];
        let mut data = self.read_input(&region)?;
        let op = self.op;
        crate::with_dtype!(self.info.dtype, T => {
            let carry: &[T] = &bytemuck::cast_slice::<u8, T>(carries)[before..before + outer * inner];
            let x: &mut [T] = data.as_mut_slice();
            for o in 0..outer {
                let mut acc: Vec<T> = carry[o * inner..(o + 1) * inner].to_vec();
                for j in 0..n {
                    let row = &mut x[(o * n + j) * inner..(o * n + j + 1) * inner];
                    for (a, v) in acc.iter_mut().zip(row.iter_mut()) {
                        *a = combine(op, *a, *v);
                        *v = *a;
                    }
                }
            }
        });
        Ok(Chunk {
            region,
            dtype: self.info.dtype,
            data,
        })
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        // Assemble from whole chunks (a scan value depends on everything before it).
        let es = self.info.dtype.size();
        let mut out = Buffer::for_overwrite(region.numel() as usize * es)?;
        for i in self.info.layout.chunks_overlapping(region) {
            let c = self.read_chunk(i)?;
            if let Some(part) = c.region.intersect(region) {
                crate::shape::copy_box(
                    c.data.bytes(),
                    &c.region,
                    out.bytes_mut(),
                    region,
                    &part,
                    es,
                );
            }
        }
        Ok(out)
    }
}
