"""Element-wise functions and powers in a fused reduction, chunkheap against NumPy and numexpr on
the same page-cached `.npy` (by default the harness's 4 GiB f64 `a.npy`; with `--dtype f32`, a
2 GiB f32 copy of it, `a_f32.npy`, written beside it on first use).

    python3 benches/harness.py --only sum --runs 1 --dir DIR     # makes DIR/a.npy and the venv
    ${TMPDIR:-/tmp}/chunkheap-bench-venv/bin/python benches/functions_vs_peers.py --dir DIR
    ${TMPDIR:-/tmp}/chunkheap-bench-venv/bin/python benches/functions_vs_peers.py --dir DIR --dtype f32

chunkheap runs `chunkheap eval 'sum(EXPR)' a=DIR/a.npy` as a whole process (median of --runs);
NumPy evaluates EXPR over 4 Mi-element slices of `np.load(mmap_mode='r')` and sums them (one
thread, as NumPy computes); numexpr evaluates `sum(EXPR)` over the memmap with 2 threads. Each
tool's sum is printed, so the answers can be compared (they differ in the last digits: the
summation orders differ, and so do the elementary functions' last bits). Prints a Markdown table.
"""
import argparse
import os
import statistics
import subprocess
import time

import numpy as np

try:
    import numexpr as ne
except ImportError:  # run without it
    ne = None

# (expression in chunkheap's and numexpr's syntax, the same on a NumPy slice)
CASES = [
    ("a**2", lambda x: x**2),
    ("abs(a)**0.5", lambda x: np.abs(x) ** 0.5),
    ("exp(a)", np.exp),
    ("1/(1+exp(-a))", lambda x: 1 / (1 + np.exp(-x))),
    ("tanh(a)", np.tanh),
    ("log(abs(a))", lambda x: np.log(np.abs(x))),
    ("sin(a)", np.sin),
    ("cos(a)", np.cos),
    ("log10(abs(a))", lambda x: np.log10(np.abs(x))),
    ("a**3", lambda x: x**3),
]


def timed(f):
    t0 = time.perf_counter()
    r = f()
    return time.perf_counter() - t0, r


def f32_copy(path):
    """`path` rounded to f32 beside it (a temporary file renamed into place when complete)."""
    out = os.path.join(os.path.dirname(path), "a_f32.npy")
    if not os.path.exists(out):
        src = np.load(path, mmap_mode="r")
        tmp = out + ".part"
        dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=src.shape)
        for i in range(0, len(src), 1 << 24):
            dst[i:i + (1 << 24)] = src[i:i + (1 << 24)]
        dst.flush()
        del dst
        os.replace(tmp, out)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="folder holding a.npy (f64)")
    p.add_argument("--dtype", choices=["f64", "f32"], default="f64",
                   help="f32: run on a_f32.npy, a.npy rounded to f32 (written if missing)")
    p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "chunkheap"))
    p.add_argument("--runs", type=int, default=3, help="chunkheap runs per case (median)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--only", help="comma-separated expressions to run")
    args = p.parse_args()
    path = os.path.join(args.dir, "a.npy")
    if args.dtype == "f32":
        path = f32_copy(path)
    a = np.load(path, mmap_mode="r")
    with open(path, "rb") as fh:  # warm the page cache
        while fh.read(64 << 20):
            pass
    if ne is not None:
        ne.set_num_threads(args.threads)
    step = 1 << 22
    rows = []
    cases = [c for c in CASES if not args.only or c[0] in args.only.split(",")]
    for expr, f in cases:
        times = []
        for _ in range(args.runs):
            t, out = timed(lambda: subprocess.run([args.bin, "eval", f"sum({expr})", f"a={path}"],
                                                  check=True, capture_output=True, text=True).stdout.strip())
            times.append(t)
        ours = (statistics.median(times), out)

        def numpy_sum():
            with np.errstate(all="ignore"):
                return sum(float(f(a[i:i + step]).sum()) for i in range(0, len(a), step))

        npy = timed(numpy_sum)
        nex = timed(lambda: float(ne.evaluate(f"sum({expr})", local_dict={"a": a}))) if ne else None
        rows.append((expr, ours, npy, nex))
        print(f"{expr}: chunkheap {ours[0]:.3f} s, NumPy {npy[0]:.3f} s"
              + (f", numexpr {nex[0]:.3f} s" if nex else ""), flush=True)
    gb = a.nbytes / 1e9
    print(f"\n{len(a)} {args.dtype} ({gb:.2f} GB), chunkheap median of {args.runs}, peers 1 run each\n")
    print("| sum(...) | chunkheap s | NumPy (slices, 1 thread) s | numexpr s | chunkheap / best peer | sums (chunkheap; NumPy; numexpr) |")
    print("|---|---:|---:|---:|---:|---|")
    for expr, ours, npy, nex in rows:
        best = min(npy[0], nex[0]) if nex else npy[0]
        nes = f"{nex[0]:.3f}" if nex else "n/a"
        sums = f"{ours[1]}; {npy[1]!r}" + (f"; {nex[1]!r}" if nex else "")
        print(f"| `{expr}` | {ours[0]:.3f} | {npy[0]:.3f} | {nes} | {ours[0] / best:.2f}x | {sums} |")


if __name__ == "__main__":
    main()
