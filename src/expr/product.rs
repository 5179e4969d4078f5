//! `a @ b` as a deferred source: the product is computed when it is first needed, and how depends
//! on the need. Saved to an output that takes spans of elements (`.npy`), the kernel computes
//! its bands straight into the output file ([`Product::save_into`]): no copy of the product is
//! held, only B's packed blocks and each worker's band of A and its tiles. Used in any other
//! way, it is
//! computed once ([`Product::settle`]) into memory when it is at most an eighth of the budget,
//! else into a temporary Zarr store of tiles deleted with the source, and read from there.
//! Saved where the kernel cannot write spans under the budget, it is settled and copied into
//! the output with as many chunks in flight as the budget has room for now (each holds the
//! output's chunk and two tiles: one as stored and its copy cropped at the edge); where not
//! even one fits, the kernel computes it straight into the output through its other paths, or
//! refuses up front.
//!
//! A product saved straight into files is computed once per save (two saves, two products),
//! which is still less work than holding it once for a single save, the common case. Shapes
//! are checked when the product is made; the budget, when it is computed.
//!
//! The chunk layout is fixed when the product is made (that of the in-memory array or of the
//! tiles), so [`ChunkSource::info`] is known before anything is computed.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::lazy::{Src, computed_source_info};
use super::mem::MemArray;
use super::script::{ProgressFactory, TempBacked, with_progress};
use crate::error::{Error, Result};
use crate::kernels::matmul::{self, MatmulOptions};
use crate::pipeline::Progress;
use crate::shape::{ChunkLayout, Region, numel};
use crate::storage::{ArrayWriter, Buffer, Chunk, ChunkSource, SourceInfo, WriteOptions};

/// `a @ b`, computed on first need (see the module documentation).
pub struct Product {
    a: Src,
    b: Src,
    info: SourceInfo,
    /// Where the product goes when computed ahead of use.
    home: Home,
    progress: Option<ProgressFactory>,
    /// The computed product, once computed.
    done: Mutex<Option<Src>>,
}

/// Where a settled product lives.
enum Home {
    /// One in-memory array.
    Memory,
    /// A Zarr store of tiles with these chunks, in a temporary directory under this one.
    Tiles(Vec<u64>, PathBuf),
}

impl Product {
    /// The deferred product `a @ b` (shapes and dtypes checked now). `temp_parent` is where the
    /// tiles go if it is ever settled while larger than an eighth of the budget. Call it in the
    /// thread pool that will compute it (its tiles are planned for that pool's workers).
    pub fn new(
        a: Src,
        b: Src,
        temp_parent: PathBuf,
        progress: Option<ProgressFactory>,
    ) -> Result<Product> {
        let limit = crate::memory::global().limit();
        Product::planned(a, b, temp_parent, progress, limit)
    }

    /// [`new`](Self::new), choosing the home for a budget of `limit` bytes.
    fn planned(
        a: Src,
        b: Src,
        temp_parent: PathBuf,
        progress: Option<ProgressFactory>,
        limit: u64,
    ) -> Result<Product> {
        let shape = matmul::result_shape(&a.info().shape, &b.info().shape)?;
        let dtype = matmul::result_dtype(a.info().dtype, b.info().dtype);
        let bytes = numel(&shape) * dtype.size() as u64;
        let (home, layout) = if bytes <= limit / 8 {
            let layout =
                ChunkLayout::contiguous(&shape, dtype.size(), crate::formats::DEFAULT_CHUNK_BYTES);
            (Home::Memory, layout)
        } else {
            let chunks = matmul::product_chunks(a.as_ref(), b.as_ref())?;
            let layout = ChunkLayout::regular(&shape, &chunks)?;
            (Home::Tiles(chunks, temp_parent), layout)
        };
        let name = format!("{} @ {}", a.info().name, b.info().name);
        Ok(Product {
            info: computed_source_info(name, dtype, shape, layout),
            a,
            b,
            home,
            progress,
            done: Mutex::new(None),
        })
    }

    /// The product, computed now if it was not yet. Call it before the source is read from
    /// parallel code: a worker blocked here while another computes could deadlock the pool
    /// (the script backend settles every product before using it as an operand).
    pub fn settle(&self) -> Result<Src> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(src) = &*done {
            return Ok(Arc::clone(src));
        }
        let (a, b) = (self.a.as_ref(), self.b.as_ref());
        let opts = MatmulOptions::default();
        let src: Src = match &self.home {
            Home::Memory => {
                let buf = matmul::matmul_to_buffer(a, b, &opts)?;
                Arc::new(MemArray::new(
                    &self.info.name,
                    self.info.dtype,
                    self.info.shape.clone(),
                    buf,
                )?)
            }
            Home::Tiles(chunks, parent) => {
                let dir = tempfile::Builder::new()
                    .prefix("chunkheap-matmul-")
                    .tempdir_in(parent)
                    .map_err(|e| Error::io(parent, "create a temp dir in", e))?;
                let out = dir.path().join("product.zarr");
                let out = out.to_string_lossy();
                let wo = WriteOptions {
                    chunks: Some(chunks.clone()),
                    ..Default::default()
                };
                let writer = crate::formats::create(&out, self.info.dtype, &self.info.shape, &wo)?;
                // The kernel reports the bytes of the product it has written.
                let work = numel(&self.info.shape) * self.info.dtype.size() as u64;
                with_progress(self.progress.as_ref(), "matmul", work, |p| {
                    matmul::matmul(a, b, writer, &opts, p)
                })?;
                Arc::new(TempBacked::new(Arc::from(crate::formats::open(&out)?), dir))
            }
        };
        if src.info().layout != self.info.layout {
            return Err(Error::Invalid(format!(
                "{}: computed with chunks {:?} instead of the planned {:?}",
                self.info.name,
                src.info().layout,
                self.info.layout
            )));
        }
        *done = Some(Arc::clone(&src));
        Ok(src)
    }

    /// Saves the product into `writer`: computed straight into it when it is not computed yet
    /// and the kernel can write the output in spans (`.npy`) with B read once per column block;
    /// otherwise settled and copied chunk by chunk, as many chunks at once as the budget has
    /// room for (see `copy_bytes_per_chunk`); and where not even one chunk's copy fits and the
    /// product is not computed yet, computed straight into `writer` by the kernel's other
    /// paths, whose plan refuses up front, naming the limit and what it needs, when the budget
    /// is too small for those too.
    pub fn save_into(&self, writer: Box<dyn ArrayWriter>, progress: Progress<'_>) -> Result<()> {
        let computed = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let (a, b) = (self.a.as_ref(), self.b.as_ref());
        let opts = MatmulOptions::default();
        if !computed && matmul::writes_in_spans(a, b, writer.as_ref())? {
            matmul::matmul(a, b, writer, &opts, progress)?;
            return Ok(());
        }
        // What the budget has left now, less the product itself when settling will hold it.
        let budget = crate::memory::global();
        let (per_chunk, held) = self.copy_bytes_per_chunk(writer.as_ref());
        let held = if computed { 0 } else { held };
        let free = budget.limit().saturating_sub(budget.used());
        let in_flight = free.saturating_sub(held) / per_chunk.max(1);
        if in_flight == 0 && !computed {
            matmul::matmul(a, b, writer, &opts, progress)?;
            return Ok(());
        }
        let src = self.settle()?;
        let in_flight = usize::try_from(in_flight.max(1)).unwrap_or(usize::MAX);
        crate::pipeline::copy_in_flight(src.as_ref(), writer, progress, in_flight)
    }

    /// What copying the settled product into `writer` holds in the budget, `(per_chunk, held)`.
    /// Per chunk of the writer in flight: the writer's memory for it (three for an ordered
    /// writer, whose batches queue) and, from tiles, one tile as stored and its copy cropped at
    /// the product's edge (Zarr reads a region chunk by chunk straight into the writer's
    /// memory; an in-memory product is copied straight into it). Held throughout: the product
    /// itself when it lives in memory.
    fn copy_bytes_per_chunk(&self, writer: &dyn ArrayWriter) -> (u64, u64) {
        let elem = self.info.dtype.size() as u64;
        let out_chunk = writer.layout().max_chunk_elems() * elem;
        let out = if writer.positional() {
            out_chunk
        } else {
            3 * out_chunk
        };
        match &self.home {
            Home::Memory => (out, numel(&self.info.shape) * elem),
            Home::Tiles(..) => (out + 2 * self.info.layout.max_chunk_elems() * elem, 0),
        }
    }

    /// The product behind `src`, if `src` is one.
    pub fn of(src: &Src) -> Option<&Product> {
        (src.as_ref() as &dyn Any).downcast_ref::<Product>()
    }
}

impl ChunkSource for Product {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        self.settle()?.read_chunk(index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        self.settle()?.read_region(region)
    }

    fn read_region_into(&self, region: &Region, out: &mut [u8]) -> Result<()> {
        self.settle()?.read_region_into(region, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::expr::mem::MemArray;

    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 1013) as f64 / 1009.0 - 0.5)
            .collect()
    }

    fn src(shape: [u64; 2], seed: usize) -> Src {
        let v = values((shape[0] * shape[1]) as usize, seed);
        Arc::new(MemArray::from_vec("m", shape.to_vec(), &v).unwrap())
    }

    fn read_all(path: &std::path::Path) -> Vec<u8> {
        let s = crate::formats::open(path.to_str().unwrap()).unwrap();
        let full = Region::full(&s.info().shape);
        s.read_region(&full).unwrap().bytes().to_vec()
    }

    /// Saved before any other use, the product goes straight into the `.npy` (it stays
    /// unsettled); used first, it is settled and copied; both give the bytes read from the
    /// settled source, for either home.
    #[test]
    fn saves_straight_or_after_use() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (src([40, 300], 1), src([300, 520], 2));
        let want = {
            let p = Product::new(a.clone(), b.clone(), dir.path().into(), None).unwrap();
            p.read_region(&Region::full(&[40, 520]))
                .unwrap()
                .bytes()
                .to_vec()
        };
        let create = |name: &str| {
            let path = dir.path().join(name);
            let w = crate::formats::create(
                path.to_str().unwrap(),
                DType::F64,
                &[40, 520],
                &WriteOptions::default(),
            )
            .unwrap();
            (path, w)
        };
        let p = Product::new(a.clone(), b.clone(), dir.path().into(), None).unwrap();
        assert!(matches!(p.home, Home::Memory));
        let (path, w) = create("straight.npy");
        if crate::kernels::matmul::writes_in_spans(a.as_ref(), b.as_ref(), w.as_ref()).unwrap() {
            p.save_into(w, &crate::pipeline::no_progress).unwrap();
            assert!(
                p.done.lock().unwrap().is_none(),
                "computed aside, not into the file"
            );
        } else {
            // No FMA (another CPU): the packed kernel does not run; settled and copied.
            p.save_into(w, &crate::pipeline::no_progress).unwrap();
        }
        assert_eq!(read_all(&path), want);
        let settled = p.settle().unwrap();
        assert_eq!(settled.info().layout, p.info().layout);
        let (path, w) = create("after.npy");
        p.save_into(w, &crate::pipeline::no_progress).unwrap();
        assert_eq!(read_all(&path), want);
    }

    /// A product over an eighth of the budget is settled into tiles in a temporary store that
    /// goes with it; its chunks are the planned ones.
    #[test]
    fn large_products_settle_into_tiles_that_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (src([40, 300], 3), src([300, 520], 4));
        let planned = Product::new(a.clone(), b.clone(), dir.path().into(), None).unwrap();
        let want = planned
            .read_region(&Region::full(&[40, 520]))
            .unwrap()
            .bytes()
            .to_vec();
        // 166 KB of product over an eighth of a 1 MiB budget: tiles.
        let p = Product::planned(a, b, dir.path().into(), None, 1 << 20).unwrap();
        assert!(matches!(p.home, Home::Tiles(..)));
        let got = p.read_region(&Region::full(&[40, 520])).unwrap();
        assert_eq!(got.bytes(), &want[..]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(p);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
