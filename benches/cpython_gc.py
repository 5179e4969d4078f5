"""CPython's side of `benches/heap.rs`: the same work, timed the same way.

    python3 benches/cpython_gc.py

Prints the median time of (a) a reference increment + decrement (binding and deleting a name),
(b) gc.collect() of 1 million lists linked in rings of 10, with no outside references, and
(c) building those rings.
"""
import gc
import statistics
import sys
import time


def rings(n):
    for _ in range(n // 10):
        ring = [[] for _ in range(10)]
        for i in range(10):
            ring[i].append(ring[(i + 1) % 10])


def main():
    gc.disable()
    x = 1
    loops = 2_000_000
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            y = x
            del y
        samples.append((time.perf_counter() - t) / loops)
    print(f"refcount inc+dec (y = x; del y): {statistics.median(samples) * 1e9:.1f} ns")

    collect, build = [], []
    for _ in range(5):
        t = time.perf_counter()
        rings(1_000_000)
        build.append(time.perf_counter() - t)
        t = time.perf_counter()
        n = gc.collect()
        collect.append(time.perf_counter() - t)
        assert n >= 1_000_000, n
    print(f"gc.collect() of 1M objects in rings of 10: {statistics.median(collect) * 1e3:.1f} ms")
    print(f"building the rings: {statistics.median(build) * 1e3:.1f} ms")
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
