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

/// Compares one value: integers and bools exactly, floats within `rel` (NaN equals NaN).
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
    if a.is_infinite() || b.is_infinite() {
        return a == b;
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
