"""`chunkheap stats` against NumPy on the same page-cached file, in one script.

    python3 benches/stats_vs_numpy.py [--size-gib 4] [--dir DIR] [--bin target/release/chunkheap]

Generates a seeded f64 .npy of the given size (unless present), reads it once to warm the page
cache, then alternates runs: `chunkheap stats` as a subprocess (wall time and peak RSS from
/usr/bin/time), NumPy's `np.load(mmap_mode='r').sum()` (what NumPy users reach for; one
statistic, one thread), and NumPy computing the same eleven figures as `stats` (nansum, nanmean,
nanstd, nanmin, nanmax, nanargmin, nanargmax, NaN count) on the memmap. Medians of the runs.
Needs numpy; /usr/bin/time is optional (peak RSS is then not shown).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np


def run_chunkheap(binary, path):
    cmd = [binary, "stats", "--json", path]
    timer = shutil.which("time") and os.path.exists("/usr/bin/time")
    if timer:
        cmd = ["/usr/bin/time", "-v"] + cmd
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    rss = None
    if timer:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
        rss = int(m.group(1)) * 1024 if m else None
    return wall, rss


def numpy_sum(path):
    t = time.perf_counter()
    a = np.load(path, mmap_mode="r")
    a.sum()
    return time.perf_counter() - t


def numpy_stats(path):
    t = time.perf_counter()
    a = np.load(path, mmap_mode="r")
    np.nansum(a), np.nanmean(a), np.nanstd(a), np.nanmin(a), np.nanmax(a)
    np.nanargmin(a), np.nanargmax(a), np.isnan(a).sum()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--bin", default="target/release/chunkheap")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = int(args.size_gib * (1 << 30) / 8)
    path = os.path.join(args.dir, f"chunkheap-bench-{n}.npy")
    if not os.path.exists(path):
        subprocess.run([args.bin, "gen", path, "--shape", str(n), "--dist", "normal", "--seed", "1"], check=True)
    nbytes = n * 8
    with open(path, "rb") as f:  # warm the page cache just before timing
        while f.read(64 << 20):
            pass
    ours, rss, np_sum, np_stats = [], [], [], []
    for i in range(args.runs):
        w, r = run_chunkheap(args.bin, path)
        ours.append(w)
        rss.append(r)
        np_sum.append(numpy_sum(path))
        if i < 2:  # slow and memory hungry (nanstd copies the array)
            np_stats.append(numpy_stats(path))
    med = statistics.median
    gbs = lambda s: nbytes / s / 1e9
    print(f"file: {path} ({nbytes / 2**30:.2f} GiB f64, page cache warm), {os.cpu_count()} cores, numpy {np.__version__}")
    print(f"| run | median s | GB/s | peak RSS |")
    print(f"|---|---|---|---|")
    peak = max(r for r in rss if r) if any(rss) else None
    print(f"| chunkheap stats (11 figures, all threads, whole process) | {med(ours):.3f} | {gbs(med(ours)):.2f} | {peak / 2**20:.0f} MiB |" if peak else f"| chunkheap stats | {med(ours):.3f} | {gbs(med(ours)):.2f} | n/a |")
    print(f"| NumPy memmap .sum() (1 figure, 1 thread, in-process) | {med(np_sum):.3f} | {gbs(med(np_sum)):.2f} | |")
    print(f"| NumPy memmap, the same 11 figures (in-process) | {med(np_stats):.3f} | {gbs(med(np_stats)):.2f} | |")
    print(f"ratio chunkheap stats / NumPy sum time: {med(ours) / med(np_sum):.2f}x; / NumPy same figures: {med(ours) / med(np_stats):.3f}x")


if __name__ == "__main__":
    sys.exit(main())
