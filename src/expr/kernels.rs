//! Typed tile kernels: each element-wise operation is compiled, once per plan, into a closure
//! over byte slices that is monomorphised for its dtype, so the per-tile dispatch is one indirect
//! call and the inner loops are plain slice loops the compiler vectorises.

use std::sync::Arc;

use bytemuck::{cast_slice, cast_slice_mut};

use super::num::{FloatFns, Num, cast};
use super::ops::{BinOp, UnOp};
use super::{vmath, vmath32};
use crate::dtype::{Bool, DType};
use crate::error::{Error, Result};

/// A compiled step: reads its inputs' tiles, writes its output tile (all the same length in
/// elements).
pub(crate) type StepFn = Arc<dyn Fn(&[&[u8]], &mut [u8]) -> Result<()> + Send + Sync>;

#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn map1<T: Num, R: Num, F: Fn(T) -> R>(a: &[T], out: &mut [R], f: F) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = f(x);
    }
}

#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn map2<T: Num, R: Num, F: FnMut(T, T) -> R>(a: &[T], b: &[T], out: &mut [R], mut f: F) {
    for (o, (&x, &y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(x, y);
    }
}

fn b(v: bool) -> Bool {
    Bool(u8::from(v))
}

fn unary_typed<T: Num>(op: UnOp) -> StepFn {
    macro_rules! same {
        ($f:expr) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                map1::<T, T, _>(cast_slice(ins[0]), cast_slice_mut(out), $f);
                Ok(())
            })
        };
    }
    macro_rules! pred {
        ($f:expr) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                map1::<T, Bool, _>(cast_slice(ins[0]), cast_slice_mut(out), $f);
                Ok(())
            })
        };
    }
    match op {
        UnOp::Neg => same!(|x: T| x.neg()),
        UnOp::Abs => same!(|x: T| x.abs()),
        UnOp::Floor => same!(|x: T| x.floor()),
        UnOp::Ceil => same!(|x: T| x.ceil()),
        UnOp::Round => same!(|x: T| x.round()),
        UnOp::Invert => same!(|x: T| x.invert()),
        UnOp::Not => pred!(|x: T| b(!x.truthy())),
        UnOp::IsNan => pred!(|x: T| b(x.is_nan())),
        UnOp::IsInf => pred!(|x: T| b(x.is_inf())),
        UnOp::IsFinite => pred!(|x: T| b(!x.is_nan() && !x.is_inf())),
        _ => unreachable!("float functions are compiled by float_typed"),
    }
}

/// `sqrt` and `tan`, computed per element (the other float functions are [`vmath`]'s loops).
fn float_typed<T: FloatFns>(op: UnOp) -> StepFn {
    match op {
        UnOp::Sqrt => slices(|x: &[T], o: &mut [T]| map1(x, o, |v: T| v.sqrt())),
        UnOp::Tan => slices(|x: &[T], o: &mut [T]| map1(x, o, |v: T| v.tan())),
        _ => unary_typed::<T>(op),
    }
}

/// A step running `f` over its one input tile and its output tile, as typed slices.
fn slices<A: bytemuck::Pod, B: bytemuck::Pod>(
    f: impl Fn(&[A], &mut [B]) + Send + Sync + 'static,
) -> StepFn {
    Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
        f(cast_slice(ins[0]), cast_slice_mut(out));
        Ok(())
    })
}

/// The base of a logarithm's [`UnOp`].
fn log_base(op: UnOp) -> vmath::LogBase {
    match op {
        UnOp::Log => vmath::LogBase::E,
        UnOp::Log2 => vmath::LogBase::Two,
        _ => vmath::LogBase::Ten,
    }
}

/// The kernel of `op` computing in `dtype` (from [`UnOp::types`]; float functions compute in
/// `f32` or `f64`).
pub(crate) fn unary(op: UnOp, dtype: DType) -> StepFn {
    use UnOp::{Cos, Exp, Log, Log2, Log10, Sin, Sqrt, Tan, Tanh};
    match (op, dtype) {
        (Exp, DType::F64) => slices(vmath::exp_f64),
        (Exp, DType::F32) => slices(vmath32::exp_f32),
        (Tanh, DType::F64) => slices(vmath::tanh_f64),
        (Tanh, DType::F32) => slices(vmath32::tanh_f32),
        (Sin, DType::F64) => slices(vmath::sin_f64),
        (Sin, DType::F32) => slices(vmath32::sin_f32),
        (Cos, DType::F64) => slices(vmath::cos_f64),
        (Cos, DType::F32) => slices(vmath32::cos_f32),
        (Log | Log2 | Log10, DType::F64) => {
            let base = log_base(op);
            slices(move |x, o| vmath::log_f64(x, o, base))
        }
        (Log | Log2 | Log10, DType::F32) => {
            let base = log_base(op);
            slices(move |x, o| vmath::via_f64(x, o, |x, o| vmath::log_f64(x, o, base)))
        }
        (Sqrt | Tan, DType::F32) => float_typed::<f32>(op),
        (Sqrt | Tan, _) => float_typed::<f64>(op),
        (Exp | Tanh | Sin | Cos | Log | Log2 | Log10, _) => {
            unreachable!("{op:?} computes in f32 or f64, not {dtype}")
        }
        _ => crate::with_dtype!(dtype, T => unary_typed::<T>(op)),
    }
}

fn binary_typed<T: Num>(op: BinOp) -> StepFn {
    macro_rules! same {
        ($f:expr) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                map2::<T, T, _>(
                    cast_slice(ins[0]),
                    cast_slice(ins[1]),
                    cast_slice_mut(out),
                    $f,
                );
                Ok(())
            })
        };
    }
    macro_rules! pred {
        ($f:expr) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                map2::<T, Bool, _>(
                    cast_slice(ins[0]),
                    cast_slice(ins[1]),
                    cast_slice_mut(out),
                    $f,
                );
                Ok(())
            })
        };
    }
    match op {
        BinOp::Add => same!(|x: T, y: T| x.add(y)),
        BinOp::Sub => same!(|x: T, y: T| x.sub(y)),
        BinOp::Mul => same!(|x: T, y: T| x.mul(y)),
        BinOp::Div => same!(|x: T, y: T| x.div(y)),
        BinOp::FloorDiv => same!(|x: T, y: T| x.floordiv(y)),
        BinOp::Mod => same!(|x: T, y: T| x.rem(y)),
        BinOp::Minimum => same!(|x: T, y: T| x.minimum(y)),
        BinOp::Maximum => same!(|x: T, y: T| x.maximum(y)),
        BinOp::BitAnd => same!(|x: T, y: T| x.bitand(y)),
        BinOp::BitOr => same!(|x: T, y: T| x.bitor(y)),
        BinOp::BitXor => same!(|x: T, y: T| x.bitxor(y)),
        BinOp::Pow => Arc::new(|ins: &[&[u8]], out: &mut [u8]| {
            let mut bad = false;
            map2::<T, T, _>(
                cast_slice(ins[0]),
                cast_slice(ins[1]),
                cast_slice_mut(out),
                |x, y| match x.pow(y) {
                    Some(v) => v,
                    None => {
                        bad = true;
                        T::ZERO
                    }
                },
            );
            if bad {
                return Err(Error::Invalid(
                    "Integers to negative integer powers are not allowed.".into(),
                ));
            }
            Ok(())
        }),
        BinOp::Lt => pred!(|x: T, y: T| b(x < y)),
        BinOp::Le => pred!(|x: T, y: T| b(x <= y)),
        BinOp::Gt => pred!(|x: T, y: T| b(x > y)),
        BinOp::Ge => pred!(|x: T, y: T| b(x >= y)),
        BinOp::Eq => pred!(|x: T, y: T| b(x == y)),
        BinOp::Ne => pred!(|x: T, y: T| b(x != y)),
        BinOp::And => pred!(|x: T, y: T| b(x.truthy() && y.truthy())),
        BinOp::Or => pred!(|x: T, y: T| b(x.truthy() || y.truthy())),
        BinOp::Xor => pred!(|x: T, y: T| b(x.truthy() != y.truthy())),
    }
}

/// `x ** e` for a scalar exponent `e` computed in `dtype`, where a cheaper exact operation
/// gives NumPy's values: for floats, `2` is `x * x` (NumPy's `square`), `0.5` is `sqrt` (which,
/// unlike `pow`, gives `-0.0` for `-0.0` and NaN for `-inf`, as NumPy's `a ** 0.5` does), `-1`
/// is `1 / x` (`reciprocal`), `1` is `x` and `0` is `1` (`pow` returns these for every `x`,
/// NaN included); for integers, `2` is the wrapping `x * x` that exponentiation by squaring
/// computes; for `f64`, `3` and `4` are [`vmath::powi_f64`] (from exact double-double
/// products, correctly rounded in all but rare cases, as glibc's `pow`), and for `f32` the
/// same through [`vmath::via_f64`]. `None` for every other case, which keeps the elementwise
/// `pow`.
///
/// NumPy takes the first three as fast paths of `ndarray.__pow__` (`fast_scalar_power`); its
/// `np.power` gives the same values for `2`, `-1`, `1` and `0`. A `pow` call per element costs
/// about 50 cycles, a multiply a fraction of one.
pub(crate) fn pow_scalar(dtype: DType, e: f64) -> Option<(StepFn, &'static str)> {
    fn float<T: FloatFns>(e: f64) -> Option<(StepFn, &'static str)> {
        let one = T::from_i128(1);
        macro_rules! f {
            ($name:expr, $f:expr) => {{
                let f: StepFn = Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                    map1::<T, T, _>(cast_slice(ins[0]), cast_slice_mut(out), $f);
                    Ok(())
                });
                Some((f, $name))
            }};
        }
        if e == 2.0 {
            f!("square", |x: T| x.mul(x))
        } else if e == 0.5 {
            f!("sqrt", |x: T| x.sqrt())
        } else if e == -1.0 {
            f!("reciprocal", move |x: T| one.div(x))
        } else if e == 1.0 {
            f!("positive", |x: T| x)
        } else if e == 0.0 {
            f!("ones_like", move |_: T| one)
        } else {
            None
        }
    }
    if dtype == DType::F64 && (e == 3.0 || e == 4.0) {
        let n = e as i32;
        return Some((slices(move |x, o| vmath::powi_f64(x, o, n)), "power"));
    }
    if dtype == DType::F32 && (e == 3.0 || e == 4.0) {
        let n = e as i32;
        let f = slices(move |x, o| vmath::via_f64(x, o, |x, o| vmath::powi_f64(x, o, n)));
        return Some((f, "power"));
    }
    fn square<T: Num>() -> Option<(StepFn, &'static str)> {
        let f: StepFn = Arc::new(|ins: &[&[u8]], out: &mut [u8]| {
            map1::<T, T, _>(cast_slice(ins[0]), cast_slice_mut(out), |x: T| x.mul(x));
            Ok(())
        });
        Some((f, "square"))
    }
    match dtype {
        DType::F64 => float::<f64>(e),
        DType::F32 => float::<f32>(e),
        DType::Bool => None,
        _ if e == 2.0 => crate::with_dtype!(dtype, T => square::<T>()),
        _ => None,
    }
}

/// The kernel of `op` with both operands in `dtype` (from [`BinOp::types`]).
pub(crate) fn binary(op: BinOp, dtype: DType) -> StepFn {
    crate::with_dtype!(dtype, T => binary_typed::<T>(op))
}

fn cast_typed<S: Num, D: Num>() -> StepFn {
    Arc::new(|ins: &[&[u8]], out: &mut [u8]| {
        map1::<S, D, _>(cast_slice(ins[0]), cast_slice_mut(out), cast::<S, D>);
        Ok(())
    })
}

/// Converts `from` elements to `to` (NumPy `astype`).
pub(crate) fn convert(from: DType, to: DType) -> StepFn {
    crate::with_dtype!(from, S => crate::with_dtype!(to, D => cast_typed::<S, D>()))
}

fn where_typed<T: Num>() -> StepFn {
    Arc::new(|ins: &[&[u8]], out: &mut [u8]| {
        let c: &[Bool] = cast_slice(ins[0]);
        let a: &[T] = cast_slice(ins[1]);
        let bb: &[T] = cast_slice(ins[2]);
        let out: &mut [T] = cast_slice_mut(out);
        for i in 0..out.len() {
            out[i] = if c[i].get() { a[i] } else { bb[i] };
        }
        Ok(())
    })
}

/// `where(cond, a, b)` with `cond` as bool and `a`, `b` in `dtype`.
pub(crate) fn select(dtype: DType) -> StepFn {
    crate::with_dtype!(dtype, T => where_typed::<T>())
}

/// Fills `out` with copies of one element given as `dtype` bytes.
pub(crate) fn fill(out: &mut [u8], value: &[u8]) {
    for c in out.chunks_exact_mut(value.len()) {
        c.copy_from_slice(value);
    }
}

/// A scalar transform `x * m + c` (NumPy's order: multiply, then add) folded into the operand of
/// a float step, so `a*2 + b` is one loop over `a` and `b` instead of a pass that stores `a*2` and
/// a second pass that reads it back. `m = 1` and `c = -0.0` are exact identities (`x * 1 == x`
/// and `x + -0.0 == x` for every `x`, signed zeros included), so the fused loop performs the same
/// IEEE operations in the same order as the separate steps and returns the same values (when both
/// operands of an operation are NaN, which NaN comes out is the compiled loop's choice, as in
/// NumPy's loops).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine {
    /// The multiplier (1 when none), a value of the step's dtype.
    pub m: f64,
    /// The addend (-0.0 when none), a value of the step's dtype.
    pub c: f64,
}

impl Affine {
    /// `x` itself.
    pub const IDENTITY: Affine = Affine { m: 1.0, c: -0.0 };

    /// `x * m`.
    pub fn mul(m: f64) -> Affine {
        Affine { m, c: -0.0 }
    }

    /// `x + c`.
    pub fn add(c: f64) -> Affine {
        Affine { m: 1.0, c }
    }

    fn has_mul(self) -> bool {
        self.m != 1.0
    }

    fn has_add(self) -> bool {
        !(self.c == 0.0 && self.c.is_sign_negative())
    }

    /// `self` then `outer`, when that is again one exact transform: only when `self` adds
    /// nothing and `outer` multiplies by at most a sign flip (`(x*m)*-1 == x*(-m)` exactly).
    pub fn then(self, outer: Affine) -> Option<Affine> {
        (!self.has_add() && (outer.m == 1.0 || outer.m == -1.0)).then_some(Affine {
            m: self.m * outer.m,
            c: outer.c,
        })
    }

    /// The transform as written in `explain` output, applied to `x`.
    pub fn describe(self, x: &str) -> String {
        let mut s = x.to_string();
        if self.has_mul() {
            s = format!("{s}*{}", crate::reduce::fmt_f64(self.m));
        }
        if self.has_add() {
            s = format!("{s}+{}", crate::reduce::fmt_f64(self.c));
        }
        s
    }
}

const OP_ADD: u8 = 0;
const OP_SUB: u8 = 1;
const OP_MUL: u8 = 2;
const OP_DIV: u8 = 3;

#[inline(always)]
fn apply<T: Num, const M: bool, const C: bool>(x: T, t: (T, T)) -> T {
    let x = if M { x.mul(t.0) } else { x };
    if C { x.add(t.1) } else { x }
}

/// `op(a * ma + ca, b * mb + cb)` in one loop; the const flags drop the parts that are identities.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
#[allow(clippy::too_many_arguments)]
fn affine2<T: Num, const OP: u8, const MA: bool, const CA: bool, const MB: bool, const CB: bool>(
    a: &[T],
    ta: (T, T),
    b: &[T],
    tb: (T, T),
    out: &mut [T],
) {
    for (o, (&x, &y)) in out.iter_mut().zip(a.iter().zip(b)) {
        let x = apply::<T, MA, CA>(x, ta);
        let y = apply::<T, MB, CB>(y, tb);
        *o = match OP {
            OP_ADD => x.add(y),
            OP_SUB => x.sub(y),
            OP_MUL => x.mul(y),
            _ => x.div(y),
        };
    }
}

/// `a * m + c` in one loop.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn affine1<T: Num, const M: bool, const C: bool>(a: &[T], t: (T, T), out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = apply::<T, M, C>(x, t);
    }
}

fn affine1_typed<T: Num + crate::Element>(t: Affine) -> StepFn {
    let tt = (T::from_f64(t.m), T::from_f64(t.c));
    macro_rules! k {
        ($m:literal, $c:literal) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                affine1::<T, $m, $c>(cast_slice(ins[0]), tt, cast_slice_mut(out));
                Ok(())
            })
        };
    }
    match (t.has_mul(), t.has_add()) {
        (true, true) => k!(true, true),
        (true, false) => k!(true, false),
        (false, true) => k!(false, true),
        (false, false) => k!(false, false),
    }
}

fn affine2_typed<T: Num + crate::Element, const OP: u8>(ta: Affine, tb: Affine) -> StepFn {
    let pa = (T::from_f64(ta.m), T::from_f64(ta.c));
    let pb = (T::from_f64(tb.m), T::from_f64(tb.c));
    macro_rules! k {
        ($ma:literal, $ca:literal, $mb:literal, $cb:literal) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                affine2::<T, OP, $ma, $ca, $mb, $cb>(
                    cast_slice(ins[0]),
                    pa,
                    cast_slice(ins[1]),
                    pb,
                    cast_slice_mut(out),
                );
                Ok(())
            })
        };
    }
    // Both operands' transforms in full, or only the parts that are present for the common
    // single-transform cases (`a*2 + b`, `a + b*3`, `a - b*w`).
    match (ta.has_mul(), ta.has_add(), tb.has_mul(), tb.has_add()) {
        (true, false, false, false) => k!(true, false, false, false),
        (false, true, false, false) => k!(false, true, false, false),
        (false, false, true, false) => k!(false, false, true, false),
        (false, false, false, true) => k!(false, false, false, true),
        (true, false, true, false) => k!(true, false, true, false),
        _ => k!(true, true, true, true),
    }
}

/// The fused kernel of float `op` (`+ - * /`) with scalar transforms folded into its operands,
/// or `None` when `op` or `dtype` has no fused form.
pub(crate) fn affine_binary(op: BinOp, dtype: DType, ta: Affine, tb: Affine) -> Option<StepFn> {
    macro_rules! by_op {
        ($t:ty) => {
            match op {
                BinOp::Add => Some(affine2_typed::<$t, OP_ADD>(ta, tb)),
                BinOp::Sub => Some(affine2_typed::<$t, OP_SUB>(ta, tb)),
                BinOp::Mul => Some(affine2_typed::<$t, OP_MUL>(ta, tb)),
                BinOp::Div => Some(affine2_typed::<$t, OP_DIV>(ta, tb)),
                _ => None,
            }
        };
    }
    match dtype {
        DType::F64 => by_op!(f64),
        DType::F32 => by_op!(f32),
        _ => None,
    }
}

/// The kernel of the scalar transform `t` on a float operand of `dtype`.
pub(crate) fn affine_unary(dtype: DType, t: Affine) -> Option<StepFn> {
    match dtype {
        DType::F64 => Some(affine1_typed::<f64>(t)),
        DType::F32 => Some(affine1_typed::<f32>(t)),
        _ => None,
    }
}
