//! What we write opens in NumPy, zarr-python and pyarrow with the same values and statistics.
//!
//! Needs a Python with numpy, zarr (3.x) and pyarrow: `CHUNKHEAP_PYTHON=/path/to/python`. CI
//! (`.ci/run`) creates one and sets the variable; without it the test is skipped locally and
//! fails under CI (`CI=true`), so it can never pass by silently doing nothing there.

use std::process::Command;

use crate::util::{close, parse_py_json, run_ok};

const CHECK: &str = r#"
import json, sys
import numpy as np
out = {}
for path in sys.argv[1:]:
    if path.endswith('.npy'):
        a = np.load(path)
    elif path.endswith('.zarr'):
        import zarr
        a = zarr.open_array(path, mode='r')[...]
    else:
        import pyarrow as pa
        t = pa.ipc.open_file(path).read_all()
        assert t.column_names == ['values'], t.column_names
        a = t.column(0).to_numpy()
    f = a.astype(np.float64)
    out[path] = {'shape': list(a.shape), 'dtype': str(a.dtype), 'sum': float(np.nansum(f)),
                 'std': float(np.nanstd(f)), 'argmax': int(np.nanargmax(f)), 'min': float(np.nanmin(f))}
print(json.dumps(out))
"#;

#[test]
fn our_outputs_open_in_numpy_zarr_python_and_pyarrow() {
    let Some(python) = std::env::var_os("CHUNKHEAP_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set CHUNKHEAP_PYTHON for the interop test"
        );
        eprintln!(
            "skipping interop: set CHUNKHEAP_PYTHON to a python with numpy, zarr 3 and pyarrow"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let cases = [
        (
            p("a.npy"),
            vec!["--shape", "300,41", "--dtype", "f32", "--dist", "normal"],
        ),
        (
            p("b.zarr"),
            vec![
                "--shape", "300,41", "--dtype", "i16", "--chunks", "64,16", "--range", "-999,999",
            ],
        ),
        (
            p("c.zarr"),
            vec![
                "--shape", "5,6,7", "--dtype", "f64", "--chunks", "2,4,3", "--codec", "zstd",
            ],
        ),
        (
            p("d.zarr"),
            vec![
                "--shape", "1000", "--dtype", "u8", "--chunks", "333", "--codec", "gzip",
            ],
        ),
        (
            p("e.arrow"),
            vec![
                "--shape", "10007", "--dtype", "i64", "--chunks", "1000", "--range", "-1e9,1e9",
            ],
        ),
        (
            p("f.arrow"),
            vec!["--shape", "999", "--dtype", "bool", "--chunks", "100"],
        ),
    ];
    for (path, args) in &cases {
        let mut a = vec!["gen", path.as_str(), "--seed", "11"];
        a.extend(args);
        run_ok(&a);
    }
    let out = Command::new(&python)
        .arg("-c")
        .arg(CHECK)
        .args(cases.iter().map(|c| &c.0))
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = parse_py_json(&String::from_utf8_lossy(&out.stdout));
    for (path, args) in &cases {
        let t = &theirs[path.as_str()];
        let ours = parse_py_json(&run_ok(&["stats", "--json", path]));
        let shape: Vec<u64> = args[1].split(',').map(|d| d.parse().unwrap()).collect();
        assert_eq!(t["shape"], serde_json::json!(shape), "{path}");
        let num = |v: &serde_json::Value| v.to_string().parse::<f64>().unwrap();
        assert!(
            close(num(&ours["sum"]), num(&t["sum"]), 1e-9),
            "{path}: sum {} vs {}",
            ours["sum"],
            t["sum"]
        );
        assert!(
            close(num(&ours["std"]), num(&t["std"]), 1e-9),
            "{path}: std {} vs {}",
            ours["std"],
            t["std"]
        );
        assert_eq!(ours["argmax"], t["argmax"], "{path}");
        let min = if ours["min"].is_boolean() {
            f64::from(u8::from(ours["min"].as_bool().unwrap()))
        } else {
            num(&ours["min"])
        };
        // f32 minima print with f32 round-trip precision; Python widens them to f64.
        let theirs = num(&t["min"]);
        assert!(
            min == theirs || (min as f32 == theirs as f32 && args.contains(&"f32")),
            "{path}: {min} vs {theirs}"
        );
    }
}
