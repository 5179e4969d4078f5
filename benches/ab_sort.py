#!/usr/bin/env python3
"""A/B timing of `chunkheap sort` binaries, alternating whole processes.

    python3 benches/ab_sort.py BIN1,BIN2 RUNS INPUT.npy [OPTIONS...]

Runs each binary RUNS times in turn (BIN1, BIN2, BIN1, ...) as
`BIN --progress never [OPTIONS...] sort INPUT.npy -o OUT` (OUT beside INPUT, removed at the end)
and prints each binary's user CPU, wall and system seconds per run. Alternating keeps a drifting
machine fair to both; compare only binaries timed in the same call.
"""
import os
import resource
import subprocess
import sys
import time


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    bins = sys.argv[1].split(",")
    runs = int(sys.argv[2])
    src = sys.argv[3]
    extra = sys.argv[4:]
    out = os.path.join(os.path.dirname(os.path.abspath(src)), "ab_sort_out.npy")
    res = {b: [] for b in bins}
    try:
        for _ in range(runs):
            for b in bins:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                subprocess.run([b, "--progress", "never", *extra, "sort", src, "-o", out],
                               check=True, capture_output=True)
                wall = time.perf_counter() - t
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                res[b].append((after.ru_utime - before.ru_utime, wall,
                               after.ru_stime - before.ru_stime))
    finally:
        if os.path.exists(out):
            os.remove(out)
    for b, v in res.items():
        fmt = lambda i: " ".join(f"{x[i]:.2f}" for x in v)  # noqa: E731
        print(f"{b}: user {fmt(0)} | wall {fmt(1)} | sys {fmt(2)}")


if __name__ == "__main__":
    main()
