//! Every fixture written by NumPy / zarr-python / pyarrow gives NumPy's answers, through the
//! library and through `chunkheap stats --json`; and survives a round trip through every format.

use chunkheap::reduce::{Scalar, Stats, stats};
use chunkheap::storage::{Codec, WriteOptions};
use chunkheap::{formats, pipeline};
use serde_json::Value;

use crate::util::{as_f64, close, data, data_dir, parse_py_json, run_ok};

fn answers() -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir().join("answers.json")).expect("answers.json");
    let v = parse_py_json(&text);
    v["fixtures"].as_array().expect("fixtures").clone()
}

fn scalar_matches(ours: Option<Scalar>, want: &Value, dtype: &str) -> bool {
    match (ours, want) {
        (None, Value::Null) => true,
        (Some(Scalar::Bool(b)), Value::Bool(w)) => b == *w,
        (Some(Scalar::Int(i)), Value::Number(n)) => i.to_string() == n.to_string(),
        (Some(Scalar::F32(f)), w) if dtype == "f32" => {
            as_f64(w).is_some_and(|w| (w as f32).to_bits() == f.to_bits() || (w as f32) == f)
        }
        (Some(Scalar::F64(f)), w) => {
            as_f64(w).is_some_and(|w| w == f || (w.is_nan() && f.is_nan()))
        }
        _ => false,
    }
}

/// Compares our statistics with NumPy's answer for one fixture; returns the mismatches.
fn compare(s: &Stats, a: &Value) -> Vec<String> {
    let src = a["source"].as_str().unwrap();
    let dtype = a["dtype"].as_str().unwrap();
    let mut bad = Vec::new();
    let mut check = |ok: bool, what: &str, ours: String, want: &Value| {
        if !ok {
            bad.push(format!("{src}: {what}: ours {ours}, NumPy {want}"));
        }
    };
    let shape: Vec<u64> = a["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect();
    check(
        s.shape == shape,
        "shape",
        format!("{:?}", s.shape),
        &a["shape"],
    );
    check(
        s.dtype.name() == dtype,
        "dtype",
        s.dtype.to_string(),
        &a["dtype"],
    );
    check(
        Some(s.count) == a["count"].as_u64(),
        "count",
        s.count.to_string(),
        &a["count"],
    );
    check(
        Some(s.nan_count) == a["nan_count"].as_u64(),
        "nan_count",
        s.nan_count.to_string(),
        &a["nan_count"],
    );
    // Sums: exact for integers; for floats NumPy's pairwise sum in float64 (sum_f64 for f32 data,
    // which NumPy itself sums in float32).
    match s.sum {
        Scalar::Int(i) => check(
            i.to_string() == format!("{}", a["sum"]),
            "sum",
            i.to_string(),
            &a["sum"],
        ),
        Scalar::F64(f) => {
            let want = if a.get("sum_f64").is_some() {
                &a["sum_f64"]
            } else {
                &a["sum"]
            };
            let scale = as_f64(&a["std"]).filter(|v| v.is_finite()).unwrap_or(1.0)
                * (s.count as f64).sqrt();
            let w = as_f64(want).unwrap();
            let ok =
                close(f, w, 1e-12) || (f.is_finite() && (f - w).abs() <= 1e-12 * scale.max(1.0));
            check(ok, "sum", f.to_string(), want);
        }
        other => check(false, "sum type", format!("{other:?}"), &a["sum"]),
    }
    let opt_close = |ours: Option<f64>, want: &Value, rel: f64| match (ours, as_f64(want)) {
        (None, None) => true,
        // NumPy answers NaN (with a warning) where the statistic is undefined, e.g. var with
        // ddof=1 of one element; we answer None (JSON null).
        (None, Some(w)) => w.is_nan(),
        (Some(o), Some(w)) => close(o, w, rel),
        _ => false,
    };
    check(
        opt_close(s.mean(), &a["mean"], 1e-12),
        "mean",
        format!("{:?}", s.mean()),
        &a["mean"],
    );
    check(
        opt_close(s.std(0), &a["std"], 1e-10),
        "std",
        format!("{:?}", s.std(0)),
        &a["std"],
    );
    check(
        opt_close(s.var(1), &a["var_ddof1"], 1e-10),
        "var_ddof1",
        format!("{:?}", s.var(1)),
        &a["var_ddof1"],
    );
    check(
        scalar_matches(s.min, &a["min"], dtype),
        "min",
        format!("{:?}", s.min),
        &a["min"],
    );
    check(
        scalar_matches(s.max, &a["max"], dtype),
        "max",
        format!("{:?}", s.max),
        &a["max"],
    );
    check(
        s.argmin == a["argmin"].as_u64(),
        "argmin",
        format!("{:?}", s.argmin),
        &a["argmin"],
    );
    check(
        s.argmax == a["argmax"].as_u64(),
        "argmax",
        format!("{:?}", s.argmax),
        &a["argmax"],
    );
    bad
}

#[test]
fn library_stats_match_numpy_on_every_fixture() {
    let answers = answers();
    assert!(answers.len() >= 50, "only {} fixtures", answers.len());
    let mut bad = Vec::new();
    for a in &answers {
        let src = data(a["source"].as_str().unwrap());
        match formats::open(&src).and_then(|s| stats(s.as_ref())) {
            Ok(s) => bad.extend(compare(&s, a)),
            Err(e) => bad.push(format!("{src}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn cli_stats_json_matches_numpy() {
    // The CLI prints the same figures; check the JSON keys and a few kinds of values.
    for rel in [
        "npy/i64_bigsum.npy",
        "npy/u64_bigsum.npy",
        "npy/f64_nan.npy",
        "npy/empty_f64_3x0.npy",
        "npy/bool.npy",
        "npy/f32.npy",
        "npy/f64_inf.npy",
    ] {
        let a = answers().into_iter().find(|a| a["source"] == rel).unwrap();
        let out = run_ok(&["stats", "--json", &data(rel)]);
        let j = parse_py_json(&out);
        // Keys in the documented order (the parsed map sorts them, so read the text).
        let keys = [
            "shape",
            "dtype",
            "count",
            "nan_count",
            "sum",
            "mean",
            "std",
            "min",
            "max",
            "argmin",
            "argmax",
        ];
        let pos: Vec<usize> = keys
            .iter()
            .map(|k| out.find(&format!("\"{k}\":")).expect(k))
            .collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "{rel}: key order in {out}"
        );
        assert_eq!(j.as_object().unwrap().len(), keys.len(), "{rel}: {out}");
        assert_eq!(
            keys,
            [
                "shape",
                "dtype",
                "count",
                "nan_count",
                "sum",
                "mean",
                "std",
                "min",
                "max",
                "argmin",
                "argmax"
            ],
            "{rel}"
        );
        assert_eq!(j["count"], a["count"], "{rel}");
        assert_eq!(j["argmax"], a["argmax"], "{rel}");
        if a["dtype"].as_str().unwrap().starts_with(['i', 'u', 'b']) {
            // Exact integer sums, printed as JSON integers.
            assert_eq!(j["sum"].to_string(), a["sum"].to_string(), "{rel}");
        }
        if a["count"] == 0 {
            assert_eq!(as_f64(&j["sum"]), Some(0.0), "{rel}");
            for k in ["mean", "std", "min", "max", "argmin", "argmax"] {
                assert!(j[k].is_null(), "{rel}: {k} = {}", j[k]);
            }
        }
        assert!(
            close(
                as_f64(&j["mean"]).unwrap_or(f64::NAN),
                as_f64(&a["mean"]).unwrap_or(f64::NAN),
                1e-12
            ),
            "{rel}: {out}"
        );
    }
}

#[test]
fn round_trip_through_every_format_keeps_stats() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    for a in answers() {
        let rel = a["source"].as_str().unwrap();
        let src = formats::open(&data(rel)).unwrap();
        let want = stats(src.as_ref()).unwrap();
        let one_d = src.info().shape.len() == 1;
        let mut outs = vec![
            ("x.npy", WriteOptions::default()),
            ("x.zarr", WriteOptions::default()),
            (
                "z.zarr",
                WriteOptions {
                    chunks: Some(src.info().shape.iter().map(|&d| (d / 3).max(1)).collect()),
                    codec: Codec::Zstd(1),
                    column: None,
                    ..Default::default()
                },
            ),
        ];
        if one_d {
            outs.push((
                "x.arrow",
                WriteOptions {
                    chunks: Some(vec![77]),
                    ..Default::default()
                },
            ));
        }
        for (name, opts) in outs {
            let out = dir.path().join(name).to_string_lossy().into_owned();
            let res = formats::create(&out, src.info().dtype, &src.info().shape, &opts)
                .and_then(|w| pipeline::copy(src.as_ref(), w, &pipeline::no_progress))
                .and_then(|()| formats::open(&out))
                .and_then(|s| stats(s.as_ref()));
            match res {
                Ok(got) if got.same_up_to_rounding(&want, 1e-12) => {}
                Ok(got) => bad.push(format!("{rel} -> {name}: {got:?} != {want:?}")),
                Err(e) => bad.push(format!("{rel} -> {name}: {e}")),
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
