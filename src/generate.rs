//! Seeded data generation: `uniform`, `normal` and `arange` arrays of any shape, dtype and size.
//!
//! Values come from a counter-based generator: element `i` is a pure function of `(seed, i)`, its
//! flat C-order index (SplitMix64's output function applied to a Weyl sequence, which passes
//! BigCrush). Any chunk can therefore be generated independently, on any thread, and the bytes of
//! the output never depend on the thread count or on the output chunking.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::formats;
use crate::pipeline::{Progress, no_progress, write_all};
use crate::shape::{Region, c_strides, checked_numel};
use crate::storage::{Buffer, WriteOptions};

/// Value distributions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Uniform on `[low, high)`: default `[0, 1)` for floats, `[0, 100)` for integers, fair coin
    /// for bool.
    Uniform {
        /// Inclusive lower bound (`None`: the default).
        low: Option<f64>,
        /// Exclusive upper bound (`None`: the default).
        high: Option<f64>,
    },
    /// Normal with the given mean and standard deviation (float dtypes only).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `0, 1, 2, ...` over the flat C-order index, cast like NumPy's `arange(n).astype(dtype)`.
    Arange,
}

impl Dist {
    /// Uniform with default bounds.
    pub const UNIFORM: Dist = Dist::Uniform {
        low: None,
        high: None,
    };
    /// Standard normal.
    pub const NORMAL: Dist = Dist::Normal {
        mean: 0.0,
        std: 1.0,
    };
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenSpec {
    /// Array shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Distribution.
    pub dist: Dist,
    /// Seed.
    pub seed: u64,
    /// Output chunking and codec.
    pub options: WriteOptions,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th 64-bit output of stream `key`.
#[inline]
pub(crate) fn draw(key: u64, i: u64) -> u64 {
    mix64(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// A uniform double in `[0, 1)` with 53 random bits.
#[inline]
pub(crate) fn unit(u: u64) -> f64 {
    (u >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fills `out` with the values at flat indices `start ..`.
fn fill_run<T: Element>(out: &mut [T], start: u64, dist: Dist, seed: u64) {
    let key = mix64(seed ^ 0x6368_756E_6B68_6561); // "chunkhea"
    match dist {
        Dist::Arange => {
            for (k, o) in out.iter_mut().enumerate() {
                *o = T::from_index(start + k as u64);
            }
        }
        Dist::Uniform { low, high } => {
            if T::DTYPE == DType::Bool {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = T::from_f64((draw(key, start + k as u64) >> 63) as f64);
                }
            } else if T::DTYPE.is_float() {
                let lo = low.unwrap_or(0.0);
                let span = high.unwrap_or(1.0) - lo;
                for (k, o) in out.iter_mut().enumerate() {
                    *o = T::from_f64(lo + span * unit(draw(key, start + k as u64)));
                }
            } else {
                let lo = low.unwrap_or(0.0).ceil() as i128;
                let hi = high.unwrap_or(100.0).ceil() as i128;
                let span = (hi - lo).max(1) as u128;
                for (k, o) in out.iter_mut().enumerate() {
                    let u = draw(key, start + k as u64) as u128;
                    let v = lo + ((u * span) >> 64) as i128;
                    *o = if std::mem::size_of::<T>() == 8 {
                        // 64-bit integers beyond 2^53 do not survive f64: build them from bits.
                        bytemuck::pod_read_unaligned(&(v as i64).to_ne_bytes())
                    } else {
                        T::from_f64(v as f64)
                    };
                }
            }
        }
        Dist::Normal { mean, std } => {
            // Box–Muller gives two normals per pair of uniforms: element 2k takes the cosine
            // branch of pair k, element 2k + 1 the sine branch.
            let key2 = mix64(key ^ GOLDEN);
            let pair = |p: u64| {
                let u1 = 1.0 - unit(draw(key, p)); // (0, 1]
                let u2 = unit(draw(key2, p));
                let r = (-2.0 * u1.ln()).sqrt();
                let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
                (r * c, r * s)
            };
            let mut k = 0;
            while k < out.len() {
                let i = start + k as u64;
                let (z0, z1) = pair(i / 2);
                if i.is_multiple_of(2) {
                    out[k] = T::from_f64(mean + std * z0);
                    if k + 1 < out.len() {
                        out[k + 1] = T::from_f64(mean + std * z1);
                    }
                    k += 2;
                } else {
                    out[k] = T::from_f64(mean + std * z1);
                    k += 1;
                }
            }
        }
    }
}

impl GenSpec {
    /// Checks the shape, and that the distribution suits the dtype and its bounds are sane.
    pub fn validate(&self) -> Result<()> {
        checked_numel(&self.shape)?;
        if matches!(self.dist, Dist::Normal { .. }) && !self.dtype.is_float() {
            return Err(Error::Invalid(format!(
                "the normal distribution needs a float dtype (f32 or f64), not {}",
                self.dtype
            )));
        }
        if let Dist::Uniform {
            low: Some(l),
            high: Some(h),
        } = self.dist
            && (h.is_nan() || l.is_nan() || h <= l)
        {
            return Err(Error::Invalid(format!("uniform range [{l}, {h}) is empty")));
        }
        Ok(())
    }
}

/// Generates the values of `region` of an array of `shape` as a dense C-order buffer.
pub fn generate_region(
    shape: &[u64],
    region: &Region,
    dtype: DType,
    dist: Dist,
    seed: u64,
) -> Result<Buffer> {
    let n = region.numel() as usize;
    let mut buf = Buffer::zeroed(n * dtype.size())?;
    if n == 0 {
        return Ok(buf);
    }
    crate::with_dtype!(dtype, T => {
        let out: &mut [T] = buf.as_mut_slice();
        let nd = shape.len();
        if nd == 0 {
            fill_run(out, 0, dist, seed);
        } else {
            let strides = c_strides(shape);
            let run = region.shape[nd - 1] as usize;
            for (r, dst) in out.chunks_mut(run).enumerate() {
                // Multi-index of this run's first element within the region.
                let mut rem = r as u64;
                let mut flat = region.origin[nd - 1];
                for ax in (0..nd - 1).rev() {
                    let i = rem % region.shape[ax];
                    rem /= region.shape[ax];
                    flat += (region.origin[ax] + i) * strides[ax];
                }
                fill_run(dst, flat, dist, seed);
            }
        }
    });
    Ok(buf)
}

/// Generates an array into `out` (format from the extension).
pub fn generate(out: &str, spec: &GenSpec) -> Result<()> {
    generate_with_progress(out, spec, &no_progress)
}

/// [`generate`], reporting written bytes to `progress`.
pub fn generate_with_progress(out: &str, spec: &GenSpec, progress: Progress<'_>) -> Result<()> {
    spec.validate()?;
    let writer = formats::create(out, spec.dtype, &spec.shape, &spec.options)?;
    write_all(writer, progress, |region| {
        generate_region(&spec.shape, region, spec.dtype, spec.dist, spec.seed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_agree_with_whole() {
        let shape = [5u64, 7];
        let whole =
            generate_region(&shape, &Region::full(&shape), DType::F64, Dist::NORMAL, 3).unwrap();
        let whole: &[f64] = whole.as_slice();
        let part = Region {
            origin: vec![1, 2],
            shape: vec![3, 4],
        };
        let b = generate_region(&shape, &part, DType::F64, Dist::NORMAL, 3).unwrap();
        let b: &[f64] = b.as_slice();
        for r in 0..3 {
            for c in 0..4 {
                assert_eq!(b[r * 4 + c], whole[(r + 1) * 7 + c + 2]);
            }
        }
    }

    #[test]
    fn uniform_ranges() {
        let shape = [10_000u64];
        let b = generate_region(
            &shape,
            &Region::full(&shape),
            DType::I64,
            Dist::Uniform {
                low: Some(-5.0),
                high: Some(5.0),
            },
            1,
        )
        .unwrap();
        let v: &[i64] = b.as_slice();
        assert!(v.iter().all(|&x| (-5..5).contains(&x)));
        assert!(v.contains(&-5) && v.contains(&4));
        let b =
            generate_region(&shape, &Region::full(&shape), DType::F32, Dist::UNIFORM, 1).unwrap();
        let v: &[f32] = b.as_slice();
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
