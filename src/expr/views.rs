//! Views and constructors that are chunk sources computed on demand: basic slicing (start, stop,
//! step, integer indices), reshape of C-contiguous data, concatenation, and seeded random or
//! constant arrays. None of them copies the array; each reads just the part of its source that a
//! requested region needs.

use std::sync::Arc;

use super::lazy::{Src, computed_source_info};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::DEFAULT_CHUNK_BYTES;
use crate::generate::{Dist, GenSpec};
use crate::shape::{ChunkLayout, Region, c_strides, copy_box, numel, shape_str};
use crate::storage::{Buffer, Chunk, ChunkSource, SourceInfo};

/// One entry of a basic index: `a[i]`, `a[start:stop:step]` or `a[:]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    /// A single position (negative counts from the end); removes the axis.
    At(i64),
    /// `start:stop:step` with Python's defaults and clipping (`None` = omitted).
    Range(Option<i64>, Option<i64>, Option<i64>),
}

/// The resolved selection on one axis: `len` positions `start + i * step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AxisSel {
    start: i64,
    step: i64,
    len: u64,
    keep: bool,
}

/// Python's `slice.indices(len)`.
fn resolve(ix: Index, dim: u64, axis: usize) -> Result<AxisSel> {
    let d = dim as i64;
    match ix {
        Index::At(i) => {
            let j = if i < 0 { i + d } else { i };
            if j < 0 || j >= d {
                return Err(Error::Invalid(format!(
                    "index {i} is out of bounds for axis {axis} with size {dim}"
                )));
            }
            Ok(AxisSel {
                start: j,
                step: 1,
                len: 1,
                keep: false,
            })
        }
        Index::Range(start, stop, step) => {
            let step = step.unwrap_or(1);
            if step == 0 {
                return Err(Error::Invalid("slice step cannot be zero".into()));
            }
            let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
            let (lo, hi) = if step > 0 { (0, d) } else { (-1, d - 1) };
            let norm = |v: i64| if v < 0 { v + d } else { v };
            let s = match start {
                Some(v) => clamp(norm(v), lo, hi),
                None => {
                    if step > 0 {
                        0
                    } else {
                        d - 1
                    }
                }
            };
            let e = match stop {
                Some(v) => clamp(norm(v), lo, hi),
                None => {
                    if step > 0 {
                        d
                    } else {
                        -1
                    }
                }
            };
            let len = if step > 0 {
                if e > s { (e - s + step - 1) / step } else { 0 }
            } else if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            };
            Ok(AxisSel {
                start: s,
                step,
                len: len as u64,
                keep: true,
            })
        }
    }
}

/// A basic-indexing view `src[index]`.
pub struct Sliced {
    src: Src,
    sel: Vec<AxisSel>,
    info: SourceInfo,
}

impl Sliced {
    /// Applies `index` (at most one entry per axis; missing trailing axes are taken whole).
    pub fn build(src: Src, index: &[Index]) -> Result<Src> {
        let sinfo = src.info();
        let nd = sinfo.shape.len();
        if index.len() > nd {
            return Err(Error::Invalid(format!(
                "too many indices for array: array is {nd}-dimensional, but {} were indexed",
                index.len()
            )));
        }
        let mut sel = Vec::with_capacity(nd);
        for ax in 0..nd {
            let ix = index
                .get(ax)
                .copied()
                .unwrap_or(Index::Range(None, None, None));
            sel.push(resolve(ix, sinfo.shape[ax], ax)?);
        }
        let shape: Vec<u64> = sel.iter().filter(|s| s.keep).map(|s| s.len).collect();
        let desc: Vec<String> = index
            .iter()
            .map(|ix| match ix {
                Index::At(i) => i.to_string(),
                Index::Range(a, b, c) => {
                    let f = |v: &Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
                    match c {
                        Some(c) => format!("{}:{}:{c}", f(a), f(b)),
                        None => format!("{}:{}", f(a), f(b)),
                    }
                }
            })
            .collect();
        let name = format!("{}[{}]", sinfo.name, desc.join(", "));
        let layout = ChunkLayout::contiguous(&shape, sinfo.dtype.size(), DEFAULT_CHUNK_BYTES);
        let info = computed_source_info(name, sinfo.dtype, shape, layout);
        Ok(Arc::new(Sliced { src, sel, info }))
    }
}

impl ChunkSource for Sliced {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        // Source box covering the region, and per-axis (offset in box, step) of each output
        // position.
        let mut origin = Vec::with_capacity(self.sel.len());
        let mut shape = Vec::with_capacity(self.sel.len());
        let mut k = 0;
        let mut unit = true;
        let mut maps = Vec::with_capacity(self.sel.len());
        for s in &self.sel {
            let (o, n) = if s.keep {
                let r = (region.origin[k], region.shape[k]);
                k += 1;
                r
            } else {
                (0, 1)
            };
            if n == 0 {
                return Buffer::for_overwrite(0);
            }
            let first = s.start + o as i64 * s.step;
            let last = s.start + (o + n - 1) as i64 * s.step;
            let lo = first.min(last) as u64;
            let hi = first.max(last) as u64;
            origin.push(lo);
            shape.push(hi - lo + 1);
            unit &= s.step == 1;
            maps.push((first as u64 - lo, s.step, n));
        }
        let sub = Region { origin, shape };
        let data = self.src.read_region(&sub)?;
        if unit {
            return Ok(data);
        }
        let es = self.info.dtype.size();
        let mut out = Buffer::for_overwrite(region.numel() as usize * es)?;
        gather(data.bytes(), &sub.shape, &maps, out.bytes_mut(), es);
        Ok(out)
    }
}

/// Strided gather: output position `(i0, i1, ...)` takes box element `(off0 + i0*step0, ...)`.
fn gather(src: &[u8], box_shape: &[u64], maps: &[(u64, i64, u64)], dst: &mut [u8], es: usize) {
    let strides = c_strides(box_shape);
    let nd = maps.len();
    if nd == 0 {
        dst[..es].copy_from_slice(&src[..es]);
        return;
    }
    let mut idx = vec![0u64; nd];
    let total: u64 = maps.iter().map(|m| m.2).product();
    let (last_off, last_step, last_n) = maps[nd - 1];
    let mut o = 0usize;
    let mut done = 0u64;
    while done < total {
        let mut base = 0i64;
        for ax in 0..nd - 1 {
            let (off, step, _) = maps[ax];
            base += (off as i64 + idx[ax] as i64 * step) * strides[ax] as i64;
        }
        for j in 0..last_n {
            let p = (base + last_off as i64 + j as i64 * last_step) as usize * es;
            dst[o..o + es].copy_from_slice(&src[p..p + es]);
            o += es;
        }
        done += last_n;
        for ax in (0..nd - 1).rev() {
            idx[ax] += 1;
            if idx[ax] < maps[ax].2 {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// A C-order reshape of another source (no copy: each output region is read as flat runs).
pub struct Reshaped {
    src: Src,
    info: SourceInfo,
}

impl Reshaped {
    /// `src.reshape(shape)`; one entry may be `-1` (inferred).
    pub fn build(src: Src, shape: &[i64]) -> Result<Src> {
        let sinfo = src.info();
        let n = numel(&sinfo.shape);
        let known: i64 = shape.iter().filter(|&&d| d != -1).product();
        let unknown = shape.iter().filter(|&&d| d == -1).count();
        let bad = || {
            Error::Invalid(format!(
                "cannot reshape array of size {n} into shape {shape:?}"
            ))
        };
        if unknown > 1 || shape.iter().any(|&d| d < -1) {
            return Err(bad());
        }
        let out: Vec<u64> = if unknown == 1 {
            if known == 0 || !n.is_multiple_of(known as u64) {
                return Err(bad());
            }
            shape
                .iter()
                .map(|&d| if d == -1 { n / known as u64 } else { d as u64 })
                .collect()
        } else {
            shape.iter().map(|&d| d as u64).collect()
        };
        if numel(&out) != n {
            return Err(bad());
        }
        let layout = ChunkLayout::contiguous(&out, sinfo.dtype.size(), DEFAULT_CHUNK_BYTES);
        let name = format!("{}.reshape{}", sinfo.name, shape_str(&out));
        let info = computed_source_info(name, sinfo.dtype, out, layout);
        Ok(Arc::new(Reshaped { src, info }))
    }
}

/// Reads the flat C-order range `[a, b)` of `src` into `dst`, as a few boxes.
pub(crate) fn read_flat(src: &dyn ChunkSource, a: u64, b: u64, dst: &mut [u8]) -> Result<()> {
    let shape = &src.info().shape;
    let es = src.info().dtype.size();
    if a >= b {
        return Ok(());
    }
    if shape.is_empty() {
        let d = src.read_region(&Region::full(&[]))?;
        dst[..es].copy_from_slice(d.bytes());
        return Ok(());
    }
    let strides = c_strides(shape);
    let nd = shape.len();
    let mut pos = a;
    let mut o = 0usize;
    while pos < b {
        // The largest aligned box starting at `pos` that stays inside [pos, b).
        let mut ax = nd - 1;
        // Find the outermost axis k such that pos is aligned to strides[k] and the block fits.
        let mut chosen = nd - 1;
        loop {
            let st = strides[ax];
            if pos.is_multiple_of(st) && pos + st <= b {
                chosen = ax;
                if ax == 0 {
                    break;
                }
                ax -= 1;
            } else {
                break;
            }
        }
        let st = strides[chosen];
        let coord_of =
            |p: u64| -> Vec<u64> { (0..nd).map(|i| (p / strides[i]) % shape[i]).collect() };
        let mut origin = coord_of(pos);
        let mut rshape: Vec<u64> = vec![1; nd];
        for i in chosen + 1..nd {
            rshape[i] = shape[i];
            origin[i] = 0;
        }
        // How many consecutive blocks of `st` along `chosen` fit.
        let room = (b - pos) / st;
        let left_on_axis = shape[chosen] - origin[chosen];
        let count = if chosen == nd - 1 && st == 1 {
            ((b - pos).min(left_on_axis)).max(1)
        } else {
            room.min(left_on_axis).max(1)
        };
        rshape[chosen] = count;
        let region = Region {
            origin,
            shape: rshape,
        };
        let n = region.numel();
        let data = src.read_region(&region)?;
        dst[o..o + n as usize * es].copy_from_slice(data.bytes());
        o += n as usize * es;
        pos += n;
    }
    Ok(())
}

impl ChunkSource for Reshaped {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        let es = self.info.dtype.size();
        let n = region.numel();
        let mut out = Buffer::for_overwrite(n as usize * es)?;
        if n == 0 {
            return Ok(out);
        }
        let shape = &self.info.shape;
        if shape.is_empty() {
            read_flat(self.src.as_ref(), 0, 1, out.bytes_mut())?;
            return Ok(out);
        }
        // Each run along the last axis of the region is a flat range of the source; merge runs
        // that are adjacent.
        let strides = c_strides(shape);
        let nd = shape.len();
        let run = region.shape[nd - 1];
        let rows = n / run;
        let mut idx = vec![0u64; nd - 1];
        let mut o = 0usize;
        let mut pending: Option<(u64, u64, usize)> = None;
        for _ in 0..rows {
            let mut start = region.origin[nd - 1];
            for ax in 0..nd - 1 {
                start += (region.origin[ax] + idx[ax]) * strides[ax];
            }
            pending = match pending {
                Some((a, b, at)) if b == start => Some((a, b + run, at)),
                Some((a, b, at)) => {
                    let len = (b - a) as usize * es;
                    read_flat(self.src.as_ref(), a, b, &mut out.bytes_mut()[at..at + len])?;
                    Some((start, start + run, o))
                }
                None => Some((start, start + run, o)),
            };
            o += run as usize * es;
            for ax in (0..nd - 1).rev() {
                idx[ax] += 1;
                if idx[ax] < region.shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        if let Some((a, b, at)) = pending {
            let len = (b - a) as usize * es;
            read_flat(self.src.as_ref(), a, b, &mut out.bytes_mut()[at..at + len])?;
        }
        Ok(out)
    }
}

/// Several sources joined along one axis.
pub struct Concatenated {
    parts: Vec<Src>,
    /// Offset of each part along the axis.
    offsets: Vec<u64>,
    axis: usize,
    info: SourceInfo,
}

impl Concatenated {
    /// `concatenate(parts, axis)`: equal dtypes (promoted by the caller) and equal shapes except
    /// along `axis`.
    pub fn build(parts: Vec<Src>, axis: usize) -> Result<Src> {
        let Some(first) = parts.first() else {
            return Err(Error::Invalid(
                "need at least one array to concatenate".into(),
            ));
        };
        let dtype = first.info().dtype;
        let base = first.info().shape.clone();
        if axis >= base.len().max(1) || base.is_empty() {
            return Err(Error::Invalid(format!(
                "axis {axis} is out of bounds for array of dimension {}",
                base.len()
            )));
        }
        let mut offsets = Vec::with_capacity(parts.len());
        let mut total = 0;
        for (i, p) in parts.iter().enumerate() {
            let s = &p.info().shape;
            let same = s.len() == base.len()
                && s.iter()
                    .zip(&base)
                    .enumerate()
                    .all(|(k, (a, b))| k == axis || a == b);
            if !same {
                return Err(Error::Invalid(format!(
                    "all the input array dimensions except for the concatenation axis must match \
                     exactly, but array 0 has shape {} and array {i} has shape {}",
                    shape_str(&base),
                    shape_str(s)
                )));
            }
            if p.info().dtype != dtype {
                return Err(Error::Invalid(format!(
                    "concatenate: array {i} is {} but array 0 is {dtype}",
                    p.info().dtype
                )));
            }
            offsets.push(total);
            total += s[axis];
        }
        let mut shape = base;
        shape[axis] = total;
        let layout = ChunkLayout::contiguous(&shape, dtype.size(), DEFAULT_CHUNK_BYTES);
        let name = format!(
            "concatenate([{}], axis={axis})",
            parts
                .iter()
                .map(|p| p.info().name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let info = computed_source_info(name, dtype, shape, layout);
        Ok(Arc::new(Concatenated {
            parts,
            offsets,
            axis,
            info,
        }))
    }
}

impl ChunkSource for Concatenated {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        let es = self.info.dtype.size();
        let mut out = Buffer::for_overwrite(region.numel() as usize * es)?;
        let ax = self.axis;
        for (p, &off) in self.parts.iter().zip(&self.offsets) {
            let len = p.info().shape[ax];
            let mut part = Region::full(&p.info().shape);
            part.origin[ax] = off;
            part.shape[ax] = len;
            let Some(common) = part.intersect(region) else {
                continue;
            };
            let mut local = common.clone();
            local.origin[ax] -= off;
            let data = p.read_region(&local)?;
            copy_box(data.bytes(), &common, out.bytes_mut(), region, &common, es);
        }
        Ok(out)
    }
}

/// A seeded random (or `arange`) array generated on demand: element `i` depends only on the seed
/// and `i`, so any region can be produced on any thread.
pub struct Generated {
    spec: GenSpec,
    info: SourceInfo,
}

impl Generated {
    /// An array of `shape` and `dtype` from `dist` with `seed`.
    pub fn build(shape: Vec<u64>, dtype: DType, dist: Dist, seed: u64) -> Result<Src> {
        crate::shape::checked_numel(&shape)?;
        let spec = GenSpec {
            shape: shape.clone(),
            dtype,
            dist,
            seed,
            options: Default::default(),
        };
        spec.validate()?;
        let name = match dist {
            Dist::Arange => format!("arange({})", numel(&shape)),
            Dist::Uniform { .. } => format!("random{}", shape_str(&shape)),
            Dist::Normal { .. } => format!("normal{}", shape_str(&shape)),
        };
        let layout = ChunkLayout::contiguous(&shape, dtype.size(), DEFAULT_CHUNK_BYTES);
        let info = computed_source_info(name, dtype, shape, layout);
        Ok(Arc::new(Generated { spec, info }))
    }
}

impl ChunkSource for Generated {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        let s = &self.spec;
        crate::generate::generate_region(&s.shape, region, s.dtype, s.dist, s.seed)
    }
}

/// The same array read through a different chunk layout (each new chunk is assembled from the
/// source's overlapping chunks). Useful to align operands, and to test chunking independence.
pub struct Rechunked {
    src: Src,
    info: SourceInfo,
}

impl Rechunked {
    /// Views `src` with `layout` (whose shape must be the source's).
    pub fn build(src: Src, layout: ChunkLayout) -> Result<Src> {
        let sinfo = src.info();
        if layout.shape() != sinfo.shape {
            return Err(Error::Invalid(format!(
                "layout of shape {} for an array of shape {}",
                shape_str(&layout.shape()),
                shape_str(&sinfo.shape)
            )));
        }
        let info =
            computed_source_info(sinfo.name.clone(), sinfo.dtype, sinfo.shape.clone(), layout);
        Ok(Arc::new(Rechunked { src, info }))
    }
}

impl ChunkSource for Rechunked {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        self.src.read_region(region)
    }
}
