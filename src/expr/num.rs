//! Per-type arithmetic with NumPy's semantics: wrapping integers, Python-style floor division and
//! modulo, NaN-propagating minimum/maximum, `bool` arithmetic as logic. Every operation here is
//! `#[inline]` and branch-light so the tile loops in [`super::kernels`] vectorise.

use crate::dtype::{Bool, DType, Element};

/// Arithmetic every element type supports (the kernels are generic over it).
pub(crate) trait Num: Element + Copy + PartialOrd {
    /// True for `f32`/`f64`.
    const FLOAT: bool;
    /// Additive identity.
    const ZERO: Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// True division (floats only; integers are promoted to `f64` first).
    fn div(self, o: Self) -> Self;
    /// `//` (floor division; integer division by zero gives 0 like NumPy).
    fn floordiv(self, o: Self) -> Self;
    /// `%` (sign of the divisor; integer modulo by zero gives 0 like NumPy).
    fn rem(self, o: Self) -> Self;
    /// `**`; `None` for a negative integer exponent (NumPy raises).
    fn pow(self, o: Self) -> Option<Self>;
    /// NumPy `minimum` (NaN propagates).
    fn minimum(self, o: Self) -> Self;
    /// NumPy `maximum` (NaN propagates).
    fn maximum(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    /// Round half to even (NumPy `round`/`rint`).
    fn round(self) -> Self;
    fn is_nan(self) -> bool;
    fn is_inf(self) -> bool;
    fn truthy(self) -> bool;
    fn bitand(self, o: Self) -> Self;
    fn bitor(self, o: Self) -> Self;
    fn bitxor(self, o: Self) -> Self;
    fn invert(self) -> Self;
    /// The value as an integer (floats truncate toward zero, saturating; NaN is 0).
    fn to_i128(self) -> i128;
    /// From an integer: wrapping for integer types, nearest for floats, `!= 0` for bool.
    fn from_i128(v: i128) -> Self;
}

macro_rules! int_num {
    ($($t:ty, $signed:expr);*) => {$(
        impl Num for $t {
            const FLOAT: bool = false;
            const ZERO: Self = 0;
            #[inline] fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline] fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            #[inline] fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline] fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            #[inline]
            fn floordiv(self, o: Self) -> Self {
                if o == 0 { return 0; }
                let q = self.wrapping_div(o);
                #[allow(unused_comparisons)]
                let adjust = $signed && (self.wrapping_rem(o) != 0) && ((self < 0) != (o < 0));
                if adjust { q.wrapping_sub(1) } else { q }
            }
            #[inline]
            fn rem(self, o: Self) -> Self {
                if o == 0 { return 0; }
                let r = self.wrapping_rem(o);
                #[allow(unused_comparisons)]
                let adjust = $signed && r != 0 && ((r < 0) != (o < 0));
                if adjust { r.wrapping_add(o) } else { r }
            }
            #[inline]
            fn pow(self, o: Self) -> Option<Self> {
                #[allow(unused_comparisons)]
                if o < 0 { return None; }
                let mut base = self;
                let mut e = o as u64;
                let mut acc: Self = 1;
                while e > 0 {
                    if e & 1 == 1 { acc = acc.wrapping_mul(base); }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                Some(acc)
            }
            #[inline] fn minimum(self, o: Self) -> Self { if o < self { o } else { self } }
            #[inline] fn maximum(self, o: Self) -> Self { if o > self { o } else { self } }
            #[inline] fn neg(self) -> Self { (0 as $t).wrapping_sub(self) }
            #[inline]
            fn abs(self) -> Self {
                #[allow(unused_comparisons)]
                if self < 0 { (0 as $t).wrapping_sub(self) } else { self }
            }
            #[inline] fn floor(self) -> Self { self }
            #[inline] fn ceil(self) -> Self { self }
            #[inline] fn round(self) -> Self { self }
            #[inline] fn is_nan(self) -> bool { false }
            #[inline] fn is_inf(self) -> bool { false }
            #[inline] fn truthy(self) -> bool { self != 0 }
            #[inline] fn bitand(self, o: Self) -> Self { self & o }
            #[inline] fn bitor(self, o: Self) -> Self { self | o }
            #[inline] fn bitxor(self, o: Self) -> Self { self ^ o }
            #[inline] fn invert(self) -> Self { !self }
            #[inline] fn to_i128(self) -> i128 { self as i128 }
            #[inline] fn from_i128(v: i128) -> Self { v as $t }
        }
    )*};
}
int_num!(i8, true; i16, true; i32, true; i64, true; u8, false; u16, false; u32, false; u64, false);

macro_rules! float_num {
    ($($t:ty);*) => {$(
        impl Num for $t {
            const FLOAT: bool = true;
            const ZERO: Self = 0.0;
            #[inline] fn add(self, o: Self) -> Self { self + o }
            #[inline] fn sub(self, o: Self) -> Self { self - o }
            #[inline] fn mul(self, o: Self) -> Self { self * o }
            #[inline] fn div(self, o: Self) -> Self { self / o }
            #[inline]
            fn floordiv(self, o: Self) -> Self { divmod(self, o).0 }
            #[inline]
            fn rem(self, o: Self) -> Self { divmod(self, o).1 }
            #[inline] fn pow(self, o: Self) -> Option<Self> { Some(self.powf(o)) }
            #[inline]
            fn minimum(self, o: Self) -> Self {
                if self.is_nan() || o.is_nan() { Self::NAN } else if o < self { o } else { self }
            }
            #[inline]
            fn maximum(self, o: Self) -> Self {
                if self.is_nan() || o.is_nan() { Self::NAN } else if o > self { o } else { self }
            }
            #[inline] fn neg(self) -> Self { -self }
            #[inline] fn abs(self) -> Self { <$t>::abs(self) }
            #[inline] fn floor(self) -> Self { <$t>::floor(self) }
            #[inline] fn ceil(self) -> Self { <$t>::ceil(self) }
            #[inline] fn round(self) -> Self { <$t>::round_ties_even(self) }
            #[inline] fn is_nan(self) -> bool { <$t>::is_nan(self) }
            #[inline] fn is_inf(self) -> bool { <$t>::is_infinite(self) }
            #[inline] fn truthy(self) -> bool { self != 0.0 }
            #[inline] fn bitand(self, _: Self) -> Self { Self::NAN }
            #[inline] fn bitor(self, _: Self) -> Self { Self::NAN }
            #[inline] fn bitxor(self, _: Self) -> Self { Self::NAN }
            #[inline] fn invert(self) -> Self { Self::NAN }
            #[inline] fn to_i128(self) -> i128 { self as i128 }
            #[inline] fn from_i128(v: i128) -> Self { v as $t }
        }

        impl FloatFns for $t {
            #[inline] fn sqrt(self) -> Self { <$t>::sqrt(self) }
            #[inline] fn tan(self) -> Self { <$t>::tan(self) }
        }
    )*};
}

/// The float functions computed per element through the standard library (the others are
/// `vmath`'s loops; integer inputs are promoted first).
pub(crate) trait FloatFns: Num {
    fn sqrt(self) -> Self;
    fn tan(self) -> Self;
}

float_num!(f32; f64);

/// NumPy's `npy_divmod` for floats: `(floor(a / b), a mod b)` with the modulo taking the divisor's
/// sign, computed from `fmod` so that `a == b * q + r` as closely as possible.
#[inline]
fn divmod<T: num_float::F>(a: T, b: T) -> (T, T) {
    let m = a.fmod(b);
    if b == T::ZERO {
        return (a / b, m);
    }
    let mut div = (a - m) / b;
    let mut m = m;
    if m != T::ZERO {
        if (b < T::ZERO) != (m < T::ZERO) {
            m = m + b;
            div = div - T::ONE;
        }
    } else {
        m = T::ZERO.copysign(b);
    }
    let fl = if div != T::ZERO {
        let f = div.floor();
        if div - f > T::HALF { f + T::ONE } else { f }
    } else {
        T::ZERO.copysign(a / b)
    };
    (fl, m)
}

mod num_float {
    use std::ops::{Add, Div, Sub};
    pub trait F:
        Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Div<Output = Self>
    {
        const ZERO: Self;
        const ONE: Self;
        const HALF: Self;
        fn fmod(self, o: Self) -> Self;
        fn floor(self) -> Self;
        fn copysign(self, s: Self) -> Self;
    }
    macro_rules! f {
        ($($t:ty),*) => {$(
            impl F for $t {
                const ZERO: Self = 0.0;
                const ONE: Self = 1.0;
                const HALF: Self = 0.5;
                #[inline] fn fmod(self, o: Self) -> Self { self % o }
                #[inline] fn floor(self) -> Self { <$t>::floor(self) }
                #[inline] fn copysign(self, s: Self) -> Self { <$t>::copysign(self, s) }
            }
        )*};
    }
    f!(f32, f64);
}

impl Num for Bool {
    const FLOAT: bool = false;
    const ZERO: Self = Bool(0);
    #[inline]
    fn add(self, o: Self) -> Self {
        Bool(u8::from(self.get() | o.get()))
    }
    #[inline]
    fn sub(self, o: Self) -> Self {
        Bool(u8::from(self.get() ^ o.get()))
    }
    #[inline]
    fn mul(self, o: Self) -> Self {
        Bool(u8::from(self.get() & o.get()))
    }
    #[inline]
    fn div(self, o: Self) -> Self {
        self.mul(o)
    }
    #[inline]
    fn floordiv(self, o: Self) -> Self {
        self.mul(o)
    }
    #[inline]
    fn rem(self, _: Self) -> Self {
        Bool(0)
    }
    #[inline]
    fn pow(self, o: Self) -> Option<Self> {
        Some(Bool(u8::from(self.get() | !o.get())))
    }
    #[inline]
    fn minimum(self, o: Self) -> Self {
        self.mul(o)
    }
    #[inline]
    fn maximum(self, o: Self) -> Self {
        self.add(o)
    }
    #[inline]
    fn neg(self) -> Self {
        self
    }
    #[inline]
    fn abs(self) -> Self {
        self
    }
    #[inline]
    fn floor(self) -> Self {
        self
    }
    #[inline]
    fn ceil(self) -> Self {
        self
    }
    #[inline]
    fn round(self) -> Self {
        self
    }
    #[inline]
    fn is_nan(self) -> bool {
        false
    }
    #[inline]
    fn is_inf(self) -> bool {
        false
    }
    #[inline]
    fn truthy(self) -> bool {
        self.get()
    }
    #[inline]
    fn bitand(self, o: Self) -> Self {
        self.mul(o)
    }
    #[inline]
    fn bitor(self, o: Self) -> Self {
        self.add(o)
    }
    #[inline]
    fn bitxor(self, o: Self) -> Self {
        self.sub(o)
    }
    #[inline]
    fn invert(self) -> Self {
        Bool(u8::from(!self.get()))
    }
    #[inline]
    fn to_i128(self) -> i128 {
        i128::from(self.get())
    }
    #[inline]
    fn from_i128(v: i128) -> Self {
        Bool(u8::from(v != 0))
    }
}

/// Converts one element between types with NumPy's `astype` rules (unsafe casting): integers
/// wrap, floats truncate toward zero (saturating here; NumPy leaves out-of-range values
/// undefined), anything to bool is `!= 0`, and NaN to bool is true.
#[inline]
pub(crate) fn cast<S: Num, D: Num>(x: S) -> D {
    if D::DTYPE == DType::Bool {
        // NaN != 0 is true in NumPy.
        return D::from_i128(i128::from(x.truthy() || x.is_nan()));
    }
    if S::FLOAT && !D::FLOAT {
        // Out-of-range values are undefined in NumPy; like its x86 builds, truncate to a 64-bit
        // integer first, then wrap to the narrower type.
        let v = x.to_f64();
        let i = if v >= (1u64 << 63) as f64 {
            i128::from(v as u64)
        } else {
            i128::from(v as i64)
        };
        return D::from_i128(i);
    }
    if S::FLOAT {
        return D::from_f64(x.to_f64());
    }
    D::from_i128(x.to_i128())
}
