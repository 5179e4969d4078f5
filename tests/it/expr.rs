//! The expression engine against NumPy: every element-wise operation (with promotion and weak
//! scalars), reduction (whole-array and along axes, NaN variants, ddof), scan and view in
//! `data/expr_answers.json`, written by real NumPy (`data/make_expr_fixtures.py`).

use chunkheap::expr::{
    Array, BinOp, ConstValue, Index, Operand, Reduction, ScanOp, Session, SessionConfig, UnOp, Weak,
};
use chunkheap::reduce::Scalar;
use chunkheap::{DType, Element};
use serde_json::Value;

use crate::util::data;

fn session() -> Session {
    Session::new(SessionConfig::default()).unwrap()
}

/// A result as (dtype name, shape, values as f64 or exact integer strings).
#[derive(Debug)]
struct Got {
    dtype: DType,
    shape: Vec<u64>,
    values: Vec<String>,
}

fn fmt_vals<T: Element>(a: &Array) -> chunkheap::Result<Vec<String>> {
    Ok(a.to_vec::<T>()?.iter().map(|v| format!("{v:?}")).collect())
}

fn got_array(a: &Array) -> chunkheap::Result<Got> {
    let values = chunkheap::with_dtype!(a.dtype(), T => fmt_vals::<T>(a))?;
    Ok(Got {
        dtype: a.dtype(),
        shape: a.shape().to_vec(),
        values,
    })
}

fn got_scalar(s: Scalar, dtype: DType) -> Got {
    let v = match s {
        Scalar::Bool(b) => format!("Bool({})", u8::from(b)),
        Scalar::Int(i) => i.to_string(),
        Scalar::F32(f) => format!("{f:?}"),
        Scalar::F64(f) => format!("{f:?}"),
    };
    Got {
        dtype,
        shape: vec![],
        values: vec![v],
    }
}

fn numpy_dtype(name: &str) -> DType {
    name.parse().unwrap_or_else(|_| panic!("dtype {name}"))
}

fn parse_num(s: &str) -> Option<f64> {
    match s {
        "True" | "Bool(1)" => Some(1.0),
        "False" | "Bool(0)" => Some(0.0),
        _ => s.parse::<f64>().ok(),
    }
}

/// Compares one value: integers and bools exactly, floats within `rel` (NaN equals NaN, zeros
/// and infinities exactly, sign included).
fn same(want: &str, got: &str, float: bool, rel: f64) -> bool {
    if !float {
        if let (Ok(a), Ok(b)) = (want.parse::<i128>(), got.parse::<i128>()) {
            return a == b;
        }
        return parse_num(want) == parse_num(got);
    }
    let (Some(a), Some(b)) = (parse_num(want), parse_num(got)) else {
        return false;
    };
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() || a == 0.0 || b == 0.0 {
        // Zeros compare with their sign (`x ** 0.5` of -0.0 is -0.0, `x ** 2` of it +0.0).
        return a == b && a.is_sign_negative() == b.is_sign_negative();
    }
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
}

fn weak(s: &str) -> Weak {
    match s.parse::<i128>() {
        Ok(i) => Weak::Int(i),
        Err(_) => Weak::Float(s.parse().unwrap()),
    }
}

fn parse_index(spec: &str) -> Vec<Index> {
    spec.split(',')
        .map(|p| {
            if !p.contains(':') {
                return Index::At(p.parse().unwrap());
            }
            let parts: Vec<Option<i64>> = p
                .split(':')
                .map(|x| {
                    if x.is_empty() {
                        None
                    } else {
                        Some(x.parse().unwrap())
                    }
                })
                .collect();
            Index::Range(parts[0], parts[1], parts.get(2).copied().flatten())
        })
        .collect()
}

fn eval_case(s: &Session, c: &Value) -> chunkheap::Result<Got> {
    let kind = c["kind"].as_str().unwrap();
    let name = c["name"].as_str().unwrap();
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let open = |n: &str| s.open(&data(&format!("expr/{n}.npy")));
    let axis = c.get("axis").and_then(|a| a.as_i64());
    match kind {
        "binary" => {
            let op = ALL_BINOPS.iter().find(|o| o.name() == name).unwrap();
            got_array(&open(args[0])?.binary(*op, &open(args[1])?)?)
        }
        "unary" => got_array(&open(args[0])?.unary(UnOp::from_name(name).unwrap())?),
        "scalar" => {
            let op = ALL_BINOPS.iter().find(|o| o.name() == name).unwrap();
            got_array(&open(args[0])?.binary(*op, Operand::Scalar(weak(args[1])))?)
        }
        "where" => {
            let (cnd, a, b) = (open(args[0])?, open(args[1])?, open(args[2])?);
            got_array(&s.where_(&cnd, &a, &b)?)
        }
        "clip" => {
            let a = open(args[0])?;
            got_array(&a.clip(
                Some(Operand::Scalar(weak(args[1]))),
                Some(Operand::Scalar(weak(args[2]))),
            )?)
        }
        "astype" => got_array(&open(args[0])?.astype(numpy_dtype(name))),
        "reduce" => {
            let mut r = Reduction::from_name(name).unwrap();
            r.ddof = c.get("ddof").and_then(|d| d.as_u64()).unwrap_or(0);
            let a = open(args[0])?;
            match axis {
                None => {
                    let dt = r.result_dtype(a.dtype());
                    Ok(got_scalar(a.reduce(&r)?, dt))
                }
                Some(ax) => got_array(&a.reduce_axis(&r, ax as isize)?),
            }
        }
        "scan" => {
            let op = if name == "cumsum" {
                ScanOp::CumSum
            } else {
                ScanOp::CumProd
            };
            got_array(&open(args[0])?.scan(op, axis.map(|a| a as isize))?)
        }
        "slice" => got_array(&open(args[0])?.slice(&parse_index(name))?),
        "reshape" => {
            let shape: Vec<i64> = serde_json::from_str(name).unwrap();
            got_array(&open(args[0])?.reshape(&shape)?)
        }
        "concat" => {
            let parts = [open(args[0])?, open(args[1])?];
            got_array(&s.concatenate(&parts, name.parse().unwrap())?)
        }
        k => panic!("unknown case kind {k}"),
    }
}

const ALL_BINOPS: [BinOp; 21] = [
    BinOp::Add,
    BinOp::Sub,
    BinOp::Mul,
    BinOp::Div,
    BinOp::FloorDiv,
    BinOp::Mod,
    BinOp::Pow,
    BinOp::Minimum,
    BinOp::Maximum,
    BinOp::Lt,
    BinOp::Le,
    BinOp::Gt,
    BinOp::Ge,
    BinOp::Eq,
    BinOp::Ne,
    BinOp::And,
    BinOp::Or,
    BinOp::Xor,
    BinOp::BitAnd,
    BinOp::BitOr,
    BinOp::BitXor,
];

#[test]
fn every_operation_matches_numpy() {
    let text = std::fs::read_to_string(data("expr_answers.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let s = session();
    let mut failures = Vec::new();
    let cases = all["cases"].as_array().unwrap();
    for c in cases {
        let label = format!(
            "{} {} {:?} axis={:?} ddof={:?}",
            c["kind"],
            c["name"],
            c["args"],
            c.get("axis"),
            c.get("ddof")
        );
        let got = eval_case(&s, c);
        if let Some(err) = c.get("error") {
            if got.is_ok() {
                failures.push(format!("{label}: NumPy raises {err}, we returned {got:?}"));
            }
            continue;
        }
        let want = &c["result"];
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{label}: error {e}"));
                continue;
            }
        };
        let wd = numpy_dtype(want["dtype"].as_str().unwrap());
        let wshape: Vec<u64> = serde_json::from_value(want["shape"].clone()).unwrap();
        if wd != got.dtype || wshape != got.shape {
            failures.push(format!(
                "{label}: NumPy {wd} {wshape:?}, we {} {:?}",
                got.dtype, got.shape
            ));
            continue;
        }
        let float = wd.is_float();
        // Reductions sum in a different order than NumPy; transcendental functions may differ in
        // the last place.
        let rel = match (c["kind"].as_str().unwrap(), wd) {
            (_, DType::F32) => 2e-6,
            ("reduce" | "scan", _) => 1e-12,
            _ => 4e-16,
        };
        let wv: Vec<&str> = want["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let bad: Vec<String> = wv
            .iter()
            .zip(&got.values)
            .enumerate()
            .filter(|(_, (w, g))| !same(w, g, float, rel))
            .map(|(i, (w, g))| format!("[{i}] NumPy {w} we {g}"))
            .collect();
        if !bad.is_empty() {
            failures.push(format!("{label}: {}", bad.join(", ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from NumPy:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() > 800);
}

#[test]
fn fused_expression_reads_each_operand_once_and_shares_subexpressions() {
    let s = session();
    let a = s.arange(1000, DType::F64).unwrap();
    let b = s.arange(1000, DType::F64).unwrap();
    let two_a = (&a * 2.0).unwrap();
    // (a*2) used twice: one step, shared.
    let e = ((&two_a + &b).unwrap() * &two_a).unwrap();
    let plan = e.explain();
    assert!(
        plan.contains("L0 = read") && plan.contains("L1 = read"),
        "{plan}"
    );
    assert!(!plan.contains("L2"), "each operand read once: {plan}");
    assert_eq!(plan.matches(" = *(").count(), 2, "{plan}");
    assert!(plan.contains("shared"), "{plan}");
    let v = e.to_vec::<f64>().unwrap();
    assert_eq!(v[3], (6.0 + 3.0) * 6.0);
    // Structurally equal nodes built separately are shared too.
    let x = ((&a * 2.0).unwrap() + (&a * 2.0).unwrap()).unwrap();
    let p = x.explain();
    assert_eq!(p.matches(" = *(").count(), 1, "{p}");
    assert_eq!(x.sum().unwrap().to_f64(), 2.0 * 2.0 * 499_500.0);
}

#[test]
fn weak_scalar_overflow_and_shape_errors_are_clear() {
    let s = session();
    let a = s.open(&data("expr/xu8.npy")).unwrap();
    let e = a.binary(BinOp::Add, 300i64).unwrap_err().to_string();
    assert!(e.contains("300") && e.contains("u8"), "{e}");
    let r = s.open(&data("expr/row.npy")).unwrap();
    let e = a.binary(BinOp::Add, &r).unwrap_err().to_string();
    assert!(e.contains("(16,)") && e.contains("(4,)"), "{e}");
    let e = a
        .reduce_axis(&Reduction::from_name("sum").unwrap(), 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("axis 3"), "{e}");
    let c = s.scalar(ConstValue::Float(1.5), DType::F32);
    assert_eq!(c.shape(), &[] as &[u64]);
}

mod prop {
    use std::sync::Arc;

    use chunkheap::expr::{
        Array, BinOp, MemArray, Rechunked, Reduction, ScanOp, Session, SessionConfig, UnOp,
    };
    use chunkheap::shape::ChunkLayout;
    use proptest::prelude::*;

    fn chunked(s: &Session, shape: &[u64], vals: &[f64], chunk: &[u64]) -> Array {
        let m = MemArray::from_vec("x", shape.to_vec(), vals).unwrap();
        let layout = ChunkLayout::regular(shape, chunk).unwrap();
        s.wrap(Rechunked::build(Arc::new(m), layout).unwrap())
    }

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    /// Shape (1-3 dims), values with some NaNs, and two chunk shapes.
    fn case() -> impl Strategy<Value = (Vec<u64>, Vec<f64>, Vec<u64>, Vec<u64>)> {
        prop::collection::vec(1u64..7, 1..4).prop_flat_map(|shape| {
            let n: u64 = shape.iter().product();
            let c1: Vec<_> = shape.iter().map(|&d| 1..=d).collect();
            let c2: Vec<_> = shape.iter().map(|&d| 1..=d).collect();
            (
                Just(shape),
                prop::collection::vec(
                    prop_oneof![9 => -50.0f64..50.0, 1 => Just(f64::NAN)],
                    n as usize,
                ),
                c1,
                c2,
            )
        })
    }

    fn bits(a: &Array) -> Vec<u64> {
        match a.dtype() {
            chunkheap::DType::F64 => a
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
            chunkheap::DType::Bool => a
                .to_vec::<chunkheap::dtype::Bool>()
                .unwrap()
                .iter()
                .map(|v| v.0 as u64)
                .collect(),
            chunkheap::DType::I64 => a
                .to_vec::<i64>()
                .unwrap()
                .iter()
                .map(|&v| v as u64)
                .collect(),
            chunkheap::DType::I32 => a
                .to_vec::<i32>()
                .unwrap()
                .iter()
                .map(|&v| v as u64)
                .collect(),
            d => panic!("{d}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A fused expression with broadcasting gives the same bits for any chunking and any
        /// thread count, and equals the element-by-element reference.
        #[test]
        fn fused_expressions_ignore_chunking_and_threads((shape, vals, c1, c2) in case(), k in 0usize..4) {
            let s = Session::new(SessionConfig::default()).unwrap();
            let a1 = chunked(&s, &shape, &vals, &c1);
            let a2 = chunked(&s, &shape, &vals, &c2);
            // A row operand broadcast along every leading axis.
            let last = *shape.last().unwrap();
            let row: Vec<f64> = (0..last).map(|i| i as f64 - 1.5).collect();
            let r = chunked(&s, &[last], &row, &[1]);
            let build = |a: &Array| -> Array {
                let t = ((a * 2.0).unwrap() + &r).unwrap();
                match k {
                    0 => t,
                    1 => t.unary(UnOp::Abs).unwrap().unary(UnOp::Sqrt).unwrap(),
                    2 => s.where_(&t.binary(BinOp::Gt, 0.0).unwrap(), &t, -1.0).unwrap(),
                    _ => t.binary(BinOp::FloorDiv, 3.0).unwrap().astype(chunkheap::DType::I32),
                }
            };
            let e1 = build(&a1);
            let e2 = build(&a2);
            let b1 = pool(1).install(|| bits(&e1));
            let b2 = pool(2).install(|| bits(&e2));
            let b7 = pool(7).install(|| bits(&e1));
            prop_assert_eq!(&b1, &b2);
            prop_assert_eq!(&b1, &b7);
            // Reference, element by element.
            let n = vals.len();
            for i in 0..n {
                let t = vals[i] * 2.0 + row[i % last as usize];
                let want = match k {
                    0 => t,
                    1 => t.abs().sqrt(),
                    2 => if t > 0.0 { t } else { -1.0 },
                    _ => 0.0,
                };
                if k < 3 {
                    let got = f64::from_bits(b1[i]);
                    prop_assert!(got == want || (got.is_nan() && want.is_nan()), "[{}] {} vs {}", i, got, want);
                }
            }
        }

        /// Axis reductions against plain loops, identical bits for 1, 2 and 7 threads.
        #[test]
        fn axis_reductions_match_loops((shape, vals, c1, _c2) in case(), which in 0usize..6) {
            let s = Session::new(SessionConfig::default()).unwrap();
            let a = chunked(&s, &shape, &vals, &c1);
            let name = ["sum", "nansum", "max", "nanmin", "argmax", "nanmean"][which];
            let r = Reduction::from_name(name).unwrap();
            for axis in 0..shape.len() {
                let got1 = pool(1).install(|| a.reduce_axis(&r, axis as isize).unwrap());
                let got7 = pool(7).install(|| a.reduce_axis(&r, axis as isize).unwrap());
                let g1 = bits(&got1);
                prop_assert_eq!(&g1, &bits(&got7));
                // Reference.
                let outer: u64 = shape[..axis].iter().product();
                let len = shape[axis];
                let inner: u64 = shape[axis + 1..].iter().product();
                for o in 0..outer {
                    for i in 0..inner {
                        let col: Vec<f64> = (0..len).map(|j| vals[((o * len + j) * inner + i) as usize]).collect();
                        let q = (o * inner + i) as usize;
                        let valid: Vec<f64> = col.iter().copied().filter(|v| !v.is_nan()).collect();
                        let has_nan = valid.len() < col.len();
                        let want: f64 = match name {
                            "sum" => if has_nan { f64::NAN } else { col.iter().sum() },
                            "nansum" => valid.iter().sum(),
                            "max" => if has_nan { f64::NAN } else { col.iter().copied().fold(f64::NEG_INFINITY, f64::max) },
                            "nanmin" => if valid.is_empty() { f64::NAN } else { valid.iter().copied().fold(f64::INFINITY, f64::min) },
                            "nanmean" => if valid.is_empty() { f64::NAN } else { valid.iter().sum::<f64>() / valid.len() as f64 },
                            _ => {
                                let idx = if has_nan { col.iter().position(|v| v.is_nan()).unwrap() } else {
                                    let m = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                                    col.iter().position(|&v| v == m).unwrap()
                                };
                                idx as f64
                            }
                        };
                        let got = if name == "argmax" { g1[q] as i64 as f64 } else { f64::from_bits(g1[q]) };
                        prop_assert!(
                            (got.is_nan() && want.is_nan()) || (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                            "{} axis {} [{}]: {} vs {}", name, axis, q, got, want
                        );
                    }
                }
            }
        }

        /// Scans carry across chunks: cumsum along every axis and flattened equals running sums.
        #[test]
        fn scans_carry_across_chunks((shape, vals, c1, _c2) in case()) {
            let s = Session::new(SessionConfig::default()).unwrap();
            let clean: Vec<f64> = vals.iter().map(|v| if v.is_nan() { 1.0 } else { v.round() }).collect();
            let a = chunked(&s, &shape, &clean, &c1);
            let flat = pool(2).install(|| a.scan(ScanOp::CumSum, None).unwrap().to_vec::<f64>().unwrap());
            let mut acc = 0.0;
            for (i, v) in clean.iter().enumerate() {
                acc += v;
                prop_assert_eq!(flat[i], acc);
            }
            for axis in 0..shape.len() {
                let got = pool(7).install(|| a.scan(ScanOp::CumSum, Some(axis as isize)).unwrap().to_vec::<f64>().unwrap());
                let outer: u64 = shape[..axis].iter().product();
                let len = shape[axis];
                let inner: u64 = shape[axis + 1..].iter().product();
                for o in 0..outer {
                    for i in 0..inner {
                        let mut acc = 0.0;
                        for j in 0..len {
                            let q = ((o * len + j) * inner + i) as usize;
                            acc += clean[q];
                            prop_assert_eq!(got[q], acc);
                        }
                    }
                }
            }
        }
    }
}
