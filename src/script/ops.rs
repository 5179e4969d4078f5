//! Python's number semantics on `i64`/`f64`, and Python's `repr` of floats and strings.
//!
//! Integers are 64-bit: a result that does not fit raises `OverflowError` (Python would promote
//! to a big integer). Everything else follows CPython: floor division and modulo take the sign
//! of the divisor, `int / int` is the correctly rounded quotient, `int ** -n` is a float, mixed
//! int/float comparisons are exact.

use std::cmp::Ordering;

use super::ast::BinOp;
use super::error::{ErrorKind, R, exc};

/// A number operand (`bool` counts as an int).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

fn overflow(a: i64, op: BinOp, b: i64) -> Box<super::error::Exc> {
    exc(
        ErrorKind::OverflowError,
        format!(
            "integer overflow: {a} {} {b} does not fit in a 64-bit int",
            op.symbol()
        ),
    )
}

fn zero_div(msg: &str) -> Box<super::error::Exc> {
    exc(ErrorKind::ZeroDivisionError, msg)
}

/// Python's `a // b` on ints.
pub(crate) fn int_floordiv(a: i64, b: i64) -> R<i64> {
    if b == 0 {
        return Err(zero_div("integer division or modulo by zero"));
    }
    let q = a
        .checked_div(b)
        .ok_or_else(|| overflow(a, BinOp::FloorDiv, b))?;
    Ok(if a % b != 0 && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    })
}

/// Python's `a % b` on ints (the sign of `b`).
pub(crate) fn int_mod(a: i64, b: i64) -> R<i64> {
    if b == 0 {
        return Err(zero_div("integer modulo by zero"));
    }
    let r = a.wrapping_rem(b);
    Ok(if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    })
}

/// Python's `a / b` on ints: the correctly rounded quotient.
pub(crate) fn int_truediv(a: i64, b: i64) -> R<f64> {
    if b == 0 {
        return Err(zero_div("division by zero"));
    }
    const EXACT: u64 = 1 << 53;
    if a.unsigned_abs() <= EXACT && b.unsigned_abs() <= EXACT {
        // Both exact as doubles: IEEE division rounds correctly.
        return Ok(a as f64 / b as f64);
    }
    let negative = (a < 0) != (b < 0);
    let (n, d) = (a.unsigned_abs() as u128, b.unsigned_abs() as u128);
    let mut q = n / d;
    let mut r = n % d;
    let mut exp: i32 = 0;
    // At least 55 significant bits: 53 kept, a rounding bit, and a sticky remainder.
    while 128 - q.leading_zeros() < 55 {
        r <<= 1;
        q <<= 1;
        if r >= d {
            r -= d;
            q |= 1;
        }
        exp -= 1;
    }
    let bits = 128 - q.leading_zeros();
    let extra = bits - 53;
    let mut mant = q >> extra;
    let rest = q & ((1u128 << extra) - 1);
    let half = 1u128 << (extra - 1);
    if rest > half || (rest == half && (r != 0 || mant & 1 == 1)) {
        mant += 1;
    }
    let scale = exp + extra as i32;
    // mant < 2^54 and the scale keeps the value in the normal range: exact.
    let v = mant as f64 * f64::from_bits(((1023 + scale) as u64) << 52);
    Ok(if negative { -v } else { v })
}

/// Python's `a ** b` on ints: an int for `b >= 0`, a float otherwise.
pub(crate) fn int_pow(a: i64, b: i64) -> R<Num> {
    if b < 0 {
        if a == 0 {
            return Err(zero_div("0.0 cannot be raised to a negative power"));
        }
        return float_pow(a as f64, b as f64).map(Num::Float);
    }
    let v = match a {
        0 => i64::from(b == 0),
        1 => 1,
        -1 => {
            if b % 2 == 0 {
                1
            } else {
                -1
            }
        }
        _ => u32::try_from(b)
            .ok()
            .and_then(|e| a.checked_pow(e))
            .ok_or_else(|| overflow(a, BinOp::Pow, b))?,
    };
    Ok(Num::Int(v))
}

/// Python's `a ** b` on floats.
pub(crate) fn float_pow(a: f64, b: f64) -> R<f64> {
    if b == 0.0 {
        return Ok(1.0);
    }
    if a == 0.0 && b < 0.0 && b.is_finite() {
        return Err(zero_div("0.0 cannot be raised to a negative power"));
    }
    if a < 0.0 && a.is_finite() && b.is_finite() && b.fract() != 0.0 {
        return Err(exc(
            ErrorKind::ValueError,
            "negative number cannot be raised to a fractional power (complex numbers are not supported)",
        ));
    }
    let r = a.powf(b);
    if r.is_infinite() && a.is_finite() && b.is_finite() {
        return Err(exc(
            ErrorKind::OverflowError,
            "(34, 'Numerical result out of range')",
        ));
    }
    Ok(r)
}

/// Python's `divmod(a, b)` on floats: `(a // b, a % b)`.
pub(crate) fn float_divmod(a: f64, b: f64) -> (f64, f64) {
    let mut m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 {
        if (b < 0.0) != (m < 0.0) {
            m += b;
            div -= 1.0;
        }
    } else {
        m = 0.0f64.copysign(b);
    }
    let fd = if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f64.copysign(a / b)
    };
    (fd, m)
}

/// Arithmetic on two numbers.
pub(crate) fn arith(op: BinOp, a: Num, b: Num) -> R<Num> {
    use Num::*;
    if let (Int(x), Int(y)) = (a, b) {
        let v = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::FloorDiv => return int_floordiv(x, y).map(Int),
            BinOp::Mod => return int_mod(x, y).map(Int),
            BinOp::Div => return int_truediv(x, y).map(Float),
            BinOp::Pow => return int_pow(x, y),
            BinOp::BitAnd => Some(x & y),
            BinOp::BitOr => Some(x | y),
            BinOp::BitXor => Some(x ^ y),
            BinOp::LShift => {
                if y < 0 {
                    return Err(exc(ErrorKind::ValueError, "negative shift count"));
                }
                if x == 0 {
                    Some(0)
                } else if y >= 64 {
                    None
                } else {
                    let r = x << y;
                    (r >> y == x).then_some(r)
                }
            }
            BinOp::RShift => {
                if y < 0 {
                    return Err(exc(ErrorKind::ValueError, "negative shift count"));
                }
                Some(x >> y.min(63))
            }
            BinOp::MatMul => None,
        };
        return v.map(Int).ok_or_else(|| overflow(x, op, y));
    }
    let f = |n: Num| match n {
        Int(i) => i as f64,
        Float(v) => v,
    };
    let (x, y) = (f(a), f(b));
    let v = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => {
            if y == 0.0 {
                return Err(zero_div("float division by zero"));
            }
            x / y
        }
        BinOp::FloorDiv => {
            if y == 0.0 {
                return Err(zero_div("float floor division by zero"));
            }
            float_divmod(x, y).0
        }
        BinOp::Mod => {
            if y == 0.0 {
                return Err(zero_div("float modulo"));
            }
            float_divmod(x, y).1
        }
        BinOp::Pow => float_pow(x, y)?,
        _ => unreachable!("callers only pass float-capable operators"),
    };
    Ok(Float(v))
}

/// True if `op` is defined for float operands.
pub(crate) fn float_op(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Add
            | BinOp::Sub
            | BinOp::Mul
            | BinOp::Div
            | BinOp::FloorDiv
            | BinOp::Mod
            | BinOp::Pow
    )
}

/// Exact comparison of an int with a float (`None` if the float is NaN).
pub(crate) fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO63 {
        return Some(Ordering::Less);
    }
    if f < -TWO63 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    // |t| < 2^63 (or t == -2^63): exact as an i64.
    let ti = t as i64;
    match i.cmp(&ti) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)),
        o => Some(o),
    }
}

/// Compares two numbers as Python does (`None` when a NaN is involved).
pub(crate) fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).map(Ordering::reverse),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
    }
}

/// Python's `repr(float)`: the shortest string that reads back as the same double, in fixed
/// notation for exponents -4..16 and as `1e+16` / `1e-05` otherwise.
pub fn float_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e-7", "-5e16".
    let s = format!("{v:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if exp + 1 >= n {
            out.push_str(&digits);
            for _ in 0..(exp + 1 - n) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let (a, b) = digits.split_at(exp as usize + 1);
            out.push_str(a);
            out.push('.');
            out.push_str(b);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

/// Python's `repr(str)`: single quotes unless the text has a `'` and no `"`; backslash escapes
/// for the quote, `\\`, `\n`, `\r`, `\t` and non-printable characters (control characters and
/// separators other than the space; Python's full printable table is approximated).
pub fn str_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if printable(c) => out.push(c),
            c => {
                let v = c as u32;
                if v < 0x100 {
                    out.push_str(&format!("\\x{v:02x}"));
                } else if v < 0x10000 {
                    out.push_str(&format!("\\u{v:04x}"));
                } else {
                    out.push_str(&format!("\\U{v:08x}"));
                }
            }
        }
    }
    out.push(q);
    out
}

fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c as u32, 0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0xfeff)
        || (0xd800..=0xdfff).contains(&(c as u32))
        || (0xe000..=0xf8ff).contains(&(c as u32)))
}

/// Python's slice index adjustment: the indices a slice `start:stop:step` selects from a
/// sequence of `len` items.
pub(crate) fn slice_indices(parts: [Option<i64>; 3], len: usize) -> R<Vec<usize>> {
    let len = len as i64;
    let step = parts[2].unwrap_or(1);
    if step == 0 {
        return Err(exc(ErrorKind::ValueError, "slice step cannot be zero"));
    }
    let (lo_default, hi_default) = if step > 0 { (0, len) } else { (len - 1, -1) };
    let adjust = |v: Option<i64>, default: i64| match v {
        None => default,
        Some(v) => {
            let v = if v < 0 { v.saturating_add(len) } else { v };
            if step > 0 {
                v.clamp(0, len)
            } else {
                v.clamp(-1, len - 1)
            }
        }
    };
    let start = adjust(parts[0], lo_default);
    let stop = adjust(parts[1], hi_default);
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        out.push(i as usize);
        i = match i.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(out)
}

/// A sequence index (negative from the end) as a position, or `None` if out of range.
pub(crate) fn seq_index(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let j = if i < 0 { i.checked_add(len)? } else { i };
    (0..len).contains(&j).then_some(j as usize)
}
