//! Single-precision elementary functions computed at single precision's width: sixteen lanes to
//! an AVX-512 register where [`super::vmath`]'s `f64` arithmetic has eight, and a single-precision
//! divide, several times cheaper than a double one.
//!
//! [`exp_f32`] is Cody and Waite's reduction `x = k ln2 + r` (`ln2` in two parts, the first
//! with 15 significant bits, so that `k ln2_hi` and `x - k ln2_hi` are exact) and a degree-7
//! polynomial `1 + r + r^2 q(r)` fitted by Remez's algorithm (within `2^-32.5` of `exp(r)`,
//! relative), with `r`'s and `1 + r`'s rounding errors carried. [`tanh_f32`] is an odd
//! polynomial `a + a^3 p(a^2)` (Remez, within `2^-31.4`) below `0.5`, where `tanh` cancels, and
//! `1 - 2 / (exp(2a) + 1)` above, its sums and quotient corrected for their rounding errors.
//! [`sin_f32`] and [`cos_f32`] compute in `f64`: `x - m pi/2` (no `f32` below `2^20` comes
//! nearer than `2^-27.8` to a multiple of `pi/2`) and one odd Remez polynomial for `sin` over
//! `|r| <= pi/2` (within `2^-43.7`), so no select between two kernels.
//!
//! Accuracy, against glibc's `f64` functions rounded: within one unit in the last place, for
//! `exp` and `tanh` over every `f32` (`every_f32_is_within_one_ulp`, ignored by default as it
//! takes minutes: 99.94 % and 99.98 % equal), for `sin` and `cos` over the samples; over
//! 606,000 sampled arguments, equal to the rounded value for 99.2 % (`exp`),
//! 99.6 % (`tanh`) and above 99.99 % (`sin`, `cos`). NumPy's AVX-512 single-precision loops are
//! allowed 3 units (`exp`) and 2 (`sin`, `cos`) by its own tests.
//! Arguments where the result overflows or goes subnormal (`|x| >= 87` for `exp`), huge angles
//! (`|x| >= 2^20`), infinities and NaN are handed to the C library's `f64` function after the
//! vector loop, rounded.

use super::vmath::{PIO2, SHIFT, TRIG_FAST};

const INV_PI: f64 = std::f64::consts::FRAC_1_PI;

/// `1.5 * 2^23`: adding it rounds an `f32` of magnitude below `2^22` to an integer, which then
/// sits in the low bits of the sum's representation.
const SHIFT32: f32 = 12582912.0;
/// Arguments of smaller magnitude take the vector path of [`exp_f32`]: `2^k` is a normal `f32`
/// and so is the result.
const EXP_FAST: f32 = 87.0;
/// `ln 2` in two parts: the first has 15 significant bits, so `k LN2_HI` is exact for
/// `|k| < 2^9`; the second is `ln 2 - LN2_HI` rounded.
const LN2_HI: f32 = f32::from_bits(0x3f317200);
const LN2_LO: f32 = f32::from_bits(0x35bfbe8e);
const INV_LN2: f32 = std::f32::consts::LOG2_E;
/// `exp(r) = 1 + r + r^2 (Q0 + Q1 r + ... + Q5 r^5)` within `2^-32.5`, relative, over
/// `|r| <= ln2/2` (Remez, with the coefficients rounded to `f32`).
const EXP_Q: [f32; 6] = [
    f32::from_bits(0x3f000000),
    f32::from_bits(0x3e2aaaaa),
    f32::from_bits(0x3d2aaa76),
    f32::from_bits(0x3c088945),
    f32::from_bits(0x3ab6a037),
    f32::from_bits(0x394f2f4a),
];
/// Below this, [`tanh_f32`] takes its odd polynomial; from it, `1 - 2 / (exp(2a) + 1)`.
const TANH_SMALL: f32 = 0.5;
/// From this on `tanh` rounds to `1` (`1 - tanh(a) < 2e^-2a` is below half a unit from about
/// `9.01`); larger arguments are clamped to it, which keeps `exp` in range.
const TANH_ONE: f32 = 9.5;
/// `tanh(a) = a + a^3 (P0 + P1 z + ... + P4 z^4)`, `z = a^2`, within `2^-31.4` relative over
/// `a < TANH_SMALL` (Remez).
const TANH_P: [f32; 5] = [
    f32::from_bits(0xbeaaaaa9),
    f32::from_bits(0x3e088791),
    f32::from_bits(0xbd5cc566),
    f32::from_bits(0x3cae7920),
    f32::from_bits(0xbbd9d32b),
];
/// `sin(r) = r + r^3 (S0 + S1 z + ... + S5 z^5)`, `z = r^2`, within `2^-43.7` relative over
/// `|r| <= pi/2` (Remez), evaluated in `f64`.
const SIN_S: [f64; 6] = [
    f64::from_bits(0xbfc5555555547141),
    f64::from_bits(0x3f81111110a55979),
    f64::from_bits(0xbf2a019fd5953003),
    f64::from_bits(0x3ec71dcf84c57c8a),
    f64::from_bits(0xbe5ae03f85ab7d55),
    f64::from_bits(0x3de52dbee3d8a1a6),
];
/// Below this magnitude `sin(x)` and `tanh(x)` round to `x` (their relative distance from it,
/// `x^2/6` and `x^2/3`, is below a quarter of a unit); such lanes compute from `0` (keeping
/// subnormals out of the arithmetic) and return `x`, which also keeps the sign of `-0.0`.
const TINY: f32 = 1.0 / 4096.0;

/// `a * b + c`, fused where `fma` (a constant where this is inlined) says the target has it.
#[inline(always)]
fn mul_add(a: f32, b: f32, c: f32, fma: bool) -> f32 {
    if fma { a.mul_add(b, c) } else { a * b + c }
}

/// `c[0] + c[1] x + ...` by Horner's rule.
#[inline(always)]
fn horner<const N: usize>(c: &[f32; N], x: f32, fma: bool) -> f32 {
    let mut p = c[N - 1];
    for &ci in c[..N - 1].iter().rev() {
        p = mul_add(p, x, ci, fma);
    }
    p
}

/// `(2^k, s, t)` with `exp(x) = 2^k (s + t)` for `|x| < EXP_FAST`, `s = 1 + r` rounded and
/// `t` the rest, small, computed from `r`'s rounding error, `s`'s and the polynomial, so that
/// `s + t` carries `exp(r)` to about `2^-32` (any other `x` gives some finite numbers or NaN).
#[inline(always)]
fn exp_parts(x: f32, fma: bool) -> (f32, f32, f32) {
    let kd = x * INV_LN2 + SHIFT32;
    let ki = kd.to_bits();
    let k = kd - SHIFT32;
    // Exact: `k LN2_HI` is, and lies within a factor of two of `x` where `k != 0` (Sterbenz).
    let t = x - k * LN2_HI;
    let klo = k * LN2_LO;
    let r = t - klo;
    // `r`'s rounding error (a fast two-sum: `|t| >= |klo|` but where `r` is too small to matter).
    let rr = (t - r) - klo;
    let s = 1.0 + r;
    let e = (1.0 - s) + r;
    let tail = e + mul_add(r * r, horner(&EXP_Q, r, fma), rr, fma);
    // `2^k` from its exponent bits: the low nine bits of `ki` hold `k mod 2^9`.
    (
        f32::from_bits((ki << 23).wrapping_add(1f32.to_bits())),
        s,
        tail,
    )
}

/// `exp(x)` for `|x| < EXP_FAST`, from [`exp_parts`] with one rounding.
#[inline(always)]
fn exp_one(x: f32, fma: bool) -> f32 {
    let (scale, s, t) = exp_parts(x, fma);
    (s + t) * scale
}

/// Whether `v` takes the vector path of [`exp_f32`] (false for NaN).
#[inline(always)]
fn exp_fast(v: f32) -> bool {
    v.abs() < EXP_FAST
}

/// Whether `v` takes the vector path of [`sin_f32`] and [`cos_f32`] (false for NaN).
#[inline(always)]
fn trig_fast(v: f64) -> bool {
    v.abs() < TRIG_FAST
}

/// `out[i] = exp(x[i])` for `f32`.
pub(crate) fn exp_f32(x: &[f32], out: &mut [f32]) {
    if exp_loop(x, out) {
        for (o, &v) in out.iter_mut().zip(x) {
            if !exp_fast(v) {
                *o = f64::from(v).exp() as f32;
            }
        }
    }
}

/// The vector loop of [`exp_f32`]: whether any argument is outside `(-EXP_FAST, EXP_FAST)` (or
/// NaN), whose result must then be replaced.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn exp_loop(x: &[f32], out: &mut [f32]) -> bool {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    let mut slow = false;
    for (o, &v) in out.iter_mut().zip(x) {
        let ok = exp_fast(v);
        slow |= !ok;
        *o = exp_one(if ok { v } else { 0.0 }, FMA);
    }
    slow
}

/// `tanh(v)` for a non-NaN `v`. Above `TANH_SMALL`, `q = 2 / (e + 1)` with `e + 1 = dh + dl`
/// from [`exp_parts`] exactly, corrected for `dl` and for the division's rounding (its
/// remainder), and `1 - q` summed with its rounding error kept, so that the result is rounded
/// about once.
#[inline(always)]
fn tanh_one(v: f32, fma: bool) -> f32 {
    let a = v.abs();
    let tiny = a < TINY;
    let s = if tiny { 0.0 } else { a };
    let z = s * s;
    let small = mul_add(s * z, horner(&TANH_P, z, fma), s, fma);
    let (scale, es, et) = exp_parts(
        if s < TANH_ONE {
            s + s
        } else {
            TANH_ONE + TANH_ONE
        },
        fma,
    );
    // `e = scale (p + pe)` exactly enough, then `e + 1 = dh + dl` by fast two-sums:
    // `|es| > |et|`, and `scale p >= 1` (`k >= 1` where `a >= TANH_SMALL`).
    let p = es + et;
    let pe = (es - p) + et;
    let hi = scale * p;
    let dh = hi + 1.0;
    let dl = mul_add(scale, pe, (hi - dh) + 1.0, fma);
    let q = 2.0 / dh;
    // `2 / (dh + dl) - q`, to first order: the remainder `2 - q dh` (exact with a fused
    // multiply-add), less `q dl`, over `dh` (`q / 2` is `1 / dh` closely enough).
    let ql = mul_add(-q, dl, mul_add(-q, dh, 2.0, fma), fma) * (0.5 * q);
    let h = 1.0 - q;
    let he = (1.0 - h) - q;
    let big = h + (he - ql);
    let t = if tiny {
        a
    } else if a < TANH_SMALL {
        small
    } else {
        big
    };
    t.copysign(v)
}

/// `out[i] = tanh(x[i])` for `f32`.
pub(crate) fn tanh_f32(x: &[f32], out: &mut [f32]) {
    if tanh_loop(x, out) {
        for (o, &v) in out.iter_mut().zip(x) {
            if v.is_nan() {
                *o = v;
            }
        }
    }
}

/// The vector loop of [`tanh_f32`]: whether any argument is NaN.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn tanh_loop(x: &[f32], out: &mut [f32]) -> bool {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    let mut nan = false;
    for (o, &v) in out.iter_mut().zip(x) {
        nan |= v.is_nan();
        *o = tanh_one(v, FMA);
    }
    nan
}

/// `sin(x)` when `cosine` is false, else `cos(x)`, for `|x| < TRIG_FAST`, in `f64`, by one
/// polynomial (no quadrant select between two): `x = m pi/2 + r` with `m = 2k + c`, `c = 1`
/// for the cosine (`k` the nearest integer to `x/pi - c/2`), so `|r| <= pi/2` and the result
/// is `sin(r)` with the sign of `(-1)^(k + c)`. `x - m pi/2` takes three roundings (within about
/// `2^-52` of its value, relative, as no `f32` in range comes near a multiple of `pi/2`) and the
/// polynomial has `f32`'s accuracy with room to spare, so that the one rounding to `f32` is all
/// but the whole error.
#[inline(always)]
fn trig_one(x: f32, cosine: bool, fma: bool) -> f32 {
    let m = |a: f64, b: f64, c: f64| if fma { a.mul_add(b, c) } else { a * b + c };
    let tiny = !cosine && x.abs() < TINY;
    let v = f64::from(if tiny { 0.0 } else { x });
    let c = if cosine { 1.0 } else { 0.0 };
    // (`SHIFT - 0.5` is not a double: the half goes in first.)
    let kd = m(v, INV_PI, -0.5 * c) + SHIFT;
    let k = kd - SHIFT;
    let odd = (kd.to_bits() as u32).wrapping_add(u32::from(cosine)) & 1 != 0;
    let mm = m(k, 2.0, c);
    // `mm PIO2[0]` and `mm PIO2[1]` are exact (`|mm| < 2^20`), as is the first difference
    // (Sterbenz); fused or not, the other two differences take one rounding each.
    let r = m(-mm, PIO2[0], v);
    let r = m(-mm, PIO2[1], r);
    let r = m(-mm, PIO2[2] + PIO2[3], r);
    let z = r * r;
    let mut p = SIN_S[5];
    for &s in SIN_S[..5].iter().rev() {
        p = m(p, z, s);
    }
    let y = m(r * z, p, r) as f32;
    if tiny {
        x
    } else if odd {
        -y
    } else {
        y
    }
}

/// `out[i] = sin(x[i])` for `f32`.
pub(crate) fn sin_f32(x: &[f32], out: &mut [f32]) {
    trig_f32(x, out, false);
}

/// `out[i] = cos(x[i])` for `f32`.
pub(crate) fn cos_f32(x: &[f32], out: &mut [f32]) {
    trig_f32(x, out, true);
}

fn trig_f32(x: &[f32], out: &mut [f32], cosine: bool) {
    if trig_loop(x, out, cosine) {
        for (o, &v) in out.iter_mut().zip(x) {
            let v = f64::from(v);
            if !trig_fast(v) {
                *o = (if cosine { v.cos() } else { v.sin() }) as f32;
            }
        }
    }
}

/// The vector loop of [`sin_f32`] and [`cos_f32`]: whether any argument is outside its range
/// (or NaN).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx"
))]
fn trig_loop(x: &[f32], out: &mut [f32], cosine: bool) -> bool {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    let mut slow = false;
    for (o, &v) in out.iter_mut().zip(x) {
        let ok = trig_fast(f64::from(v));
        slow |= !ok;
        *o = trig_one(if ok { v } else { 0.0 }, cosine, FMA);
    }
    slow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{draw, unit};

    /// Units in the last place between two `f32`s, across zero as well.
    fn ulps(a: f32, b: f32) -> u64 {
        let key = |x: f32| {
            let i = i64::from(x.to_bits() as i32);
            if i < 0 { i64::from(i32::MIN) - i } else { i }
        };
        (key(a) - key(b)).unsigned_abs()
    }

    type Case = (&'static str, fn(&[f32], &mut [f32]), fn(f64) -> f64);
    const CASES: [Case; 4] = [
        ("exp", exp_f32, f64::exp),
        ("tanh", tanh_f32, f64::tanh),
        ("sin", sin_f32, f64::sin),
        ("cos", cos_f32, f64::cos),
    ];

    /// `(equal, worst)` of `f` over `xs` against glibc's `f64` function rounded (the correctly
    /// rounded `f32` value but in rare double roundings), panicking on a result more than one
    /// unit off, a wrong sign (of zeros too) or a missing NaN.
    fn check(
        name: &str,
        f: fn(&[f32], &mut [f32]),
        wide: fn(f64) -> f64,
        xs: &[f32],
    ) -> (u64, u64) {
        let mut out = vec![0f32; xs.len()];
        f(xs, &mut out);
        let (mut equal, mut worst) = (0, 0);
        for (&x, &y) in xs.iter().zip(&out) {
            let want = wide(f64::from(x)) as f32;
            if want.is_nan() {
                assert!(y.is_nan(), "{name}({x:e}) = {y:e}, want NaN");
                equal += 1;
                continue;
            }
            assert_eq!(
                y.is_sign_negative(),
                want.is_sign_negative(),
                "{name}({x:e}) = {y:e}, want {want:e}"
            );
            let d = ulps(y, want);
            assert!(d <= 1, "{name}({x:e}) = {y:e}, want {want:e}: {d} ulps");
            equal += u64::from(d == 0);
            worst = worst.max(d);
        }
        (equal, worst)
    }

    #[test]
    fn sampled_arguments_are_within_one_ulp() {
        let mut i = 0;
        let mut next = move || {
            i += 1;
            draw(11, i)
        };
        let mut xs: Vec<f32> = (0..200_000)
            .map(|_| f32::from_bits(next() as u32))
            .collect();
        xs.extend((0..200_000).map(|_| (unit(next()) * 200.0 - 100.0) as f32));
        xs.extend((0..200_000).map(|_| (unit(next()) * 2.0 - 1.0) as f32));
        // Edges: each range's bounds and their neighbours, zeros, subnormals, infinities, NaN,
        // and the f32 nearest to multiples of pi/2.
        for b in [
            0.0f32, TINY, TANH_SMALL, TANH_ONE, 9.0, EXP_FAST, 88.7, 89.0, 103.0, 104.0,
        ] {
            for s in [1.0f32, -1.0] {
                let v = b * s;
                xs.extend([v, f32::from_bits(v.to_bits() + 1)]);
                if v != 0.0 {
                    xs.push(f32::from_bits(v.to_bits() - 1));
                }
            }
        }
        xs.extend([
            -0.0,
            1e-45,
            -1e-45,
            f32::MIN_POSITIVE,
            1048575.9,
            1048576.0,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        for k in 1..2000 {
            let near = (f64::from(k) * std::f64::consts::FRAC_PI_2) as f32;
            xs.extend([near, -near, f32::from_bits(near.to_bits() + 1)]);
        }
        for (name, f, wide) in CASES {
            let (equal, worst) = check(name, f, wide, &xs);
            eprintln!("{name}: {equal} of {} equal, worst {worst} ulp", xs.len());
            assert!(
                equal * 1000 >= xs.len() as u64 * 990,
                "{name}: only {equal}"
            );
        }
    }

    #[test]
    fn without_fma_the_results_are_as_close() {
        // The loops of targets without fused multiply-adds (x86-64 levels 1 to 3 without FMA)
        // round each product: checked on the one-element bodies directly.
        let mut i = 0;
        let mut next = move || {
            i += 1;
            draw(12, i)
        };
        let xs: Vec<f32> = (0..100_000)
            .map(|_| (unit(next()) * 40.0 - 20.0) as f32)
            .collect();
        for (name, one, wide) in [
            (
                "exp",
                exp_one as fn(f32, bool) -> f32,
                f64::exp as fn(f64) -> f64,
            ),
            ("tanh", tanh_one, f64::tanh),
            ("sin", |x, f| trig_one(x, false, f), f64::sin),
            ("cos", |x, f| trig_one(x, true, f), f64::cos),
        ] {
            let mut equal = 0;
            for &x in &xs {
                let want = wide(f64::from(x)) as f32;
                let y = one(x, false);
                let d = ulps(y, want);
                assert!(d <= 1, "{name}({x:e}) = {y:e} without FMA, want {want:e}");
                equal += usize::from(d == 0);
            }
            assert!(equal * 100 >= xs.len() * 98, "{name}: only {equal}");
        }
    }

    /// Every `f32` (2^32 arguments per function, minutes on two cores):
    /// `cargo test --release --lib vmath32 -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn every_f32_is_within_one_ulp() {
        use rayon::prelude::*;
        for (name, f, wide) in CASES {
            let (equal, worst) = (0..1u64 << 16)
                .into_par_iter()
                .map(|hi| {
                    let xs: Vec<f32> = (0..1u64 << 16)
                        .map(|lo| f32::from_bits((hi << 16 | lo) as u32))
                        .collect();
                    check(name, f, wide, &xs)
                })
                .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1.max(b.1)));
            eprintln!(
                "{name}: {:.3} % of every f32 equal to the rounded f64 function, worst {worst} ulp",
                100.0 * equal as f64 / 2f64.powi(32)
            );
        }
    }
}
