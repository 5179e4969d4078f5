//! Typed tile kernels: each element-wise operation is compiled, once per plan, into a closure
//! over byte slices that is monomorphised for its dtype, so the per-tile dispatch is one indirect
//! call and the inner loops are plain slice loops the compiler vectorises.

use std::sync::Arc;

use bytemuck::{cast_slice, cast_slice_mut};

use super::num::{FloatFns, Num, cast};
use super::ops::{BinOp, UnOp};
use crate::dtype::{Bool, DType};
use crate::error::{Error, Result};

/// A compiled step: reads its inputs' tiles, writes its output tile (all the same length in
/// elements).
pub(crate) type StepFn = Arc<dyn Fn(&[&[u8]], &mut [u8]) -> Result<()> + Send + Sync>;

#[inline(always)]
fn map1<T: Num, R: Num>(a: &[T], out: &mut [R], f: impl Fn(T) -> R) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = f(x);
    }
}

#[inline(always)]
fn map2<T: Num, R: Num>(a: &[T], b: &[T], out: &mut [R], mut f: impl FnMut(T, T) -> R) {
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
                map1::<T, T>(cast_slice(ins[0]), cast_slice_mut(out), $f);
                Ok(())
            })
        };
    }
    macro_rules! pred {
        ($f:expr) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                map1::<T, Bool>(cast_slice(ins[0]), cast_slice_mut(out), $f);
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

fn float_typed<T: FloatFns>(op: UnOp) -> StepFn {
    macro_rules! f {
        ($f:expr) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                map1::<T, T>(cast_slice(ins[0]), cast_slice_mut(out), $f);
                Ok(())
            })
        };
    }
    match op {
        UnOp::Sqrt => f!(|x: T| x.sqrt()),
        UnOp::Exp => f!(|x: T| x.exp()),
        UnOp::Log => f!(|x: T| x.ln()),
        UnOp::Log2 => f!(|x: T| x.log2()),
        UnOp::Log10 => f!(|x: T| x.log10()),
        UnOp::Sin => f!(|x: T| x.sin()),
        UnOp::Cos => f!(|x: T| x.cos()),
        UnOp::Tan => f!(|x: T| x.tan()),
        UnOp::Tanh => f!(|x: T| x.tanh()),
        _ => unary_typed::<T>(op),
    }
}

/// The kernel of `op` computing in `dtype` (from [`UnOp::types`]).
pub(crate) fn unary(op: UnOp, dtype: DType) -> StepFn {
    match (op, dtype) {
        (
            UnOp::Sqrt
            | UnOp::Exp
            | UnOp::Log
            | UnOp::Log2
            | UnOp::Log10
            | UnOp::Sin
            | UnOp::Cos
            | UnOp::Tan
            | UnOp::Tanh,
            _,
        ) => match dtype {
            DType::F32 => float_typed::<f32>(op),
            _ => float_typed::<f64>(op),
        },
        _ => crate::with_dtype!(dtype, T => unary_typed::<T>(op)),
    }
}

fn binary_typed<T: Num>(op: BinOp) -> StepFn {
    macro_rules! same {
        ($f:expr) => {
            Arc::new(move |ins: &[&[u8]], out: &mut [u8]| {
                map2::<T, T>(
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
                map2::<T, Bool>(
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
            map2::<T, T>(
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

/// The kernel of `op` with both operands in `dtype` (from [`BinOp::types`]).
pub(crate) fn binary(op: BinOp, dtype: DType) -> StepFn {
    crate::with_dtype!(dtype, T => binary_typed::<T>(op))
}

fn cast_typed<S: Num, D: Num>() -> StepFn {
    Arc::new(|ins: &[&[u8]], out: &mut [u8]| {
        map1::<S, D>(cast_slice(ins[0]), cast_slice_mut(out), cast::<S, D>);
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
