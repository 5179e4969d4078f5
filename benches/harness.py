"""Large-dataset benchmark: chunkheap against NumPy, numexpr, Dask and pyarrow, in one command.

    python3 benches/harness.py [--size 4GiB] [--dir DIR] [--runs 3] [--only sum,hist]
                               [--no-peers | --peers numpy_mmap,dask_zarr] [--memory-limit 512MiB]
                               [--out benches/results] [--bin PATH] [--timeout 1800]

Runs with the system `python3` (standard library only). On a fresh machine it:

1. builds chunkheap (`cargo build --release` in this repository; honours CARGO_TARGET_DIR) and
   uses `target/release/chunkheap` (`--bin PATH` skips the build and uses that binary);
2. creates or reuses a venv for the peers at `${TMPDIR:-/tmp}/chunkheap-bench-venv` (pip: numpy,
   numexpr, dask[array], zarr>=3, pyarrow, psutil, matplotlib). If pip fails it says so and runs
   chunkheap alone (tables still written; answers then go unchecked);
3. generates seeded datasets with `chunkheap gen` in `--dir` (default: a temp dir removed at the
   end; files of the right shape already in `--dir` are reused): a.npy, b.npy (`--size` of f64
   each, normal), Zarr copies a.zarr, b.zarr (64 MiB chunks, for Dask), m.npy (the same size as
   2-D `(N/1024, 1024)`), s.npy (min(512 MiB, size), for the sort) and x.npy, y.npy (n x n f64 with
   n = 8192 at 4 GiB and above, else each matrix about size/8);
4. measures the machine's limits in the same run: page-cache read throughput of a.npy with 1 and
   with all threads (pread into a reused 8 MiB buffer per thread), memory bandwidth (memcpy of
   1 GiB; NumPy copy and in-RAM sum when NumPy is there) and write throughput (one input's size to a new
   file in the data dir through the page cache, with O_DIRECT, and with fsync; the write
   workload is measured against the faster of the first two);
5. runs every workload `--runs` times per tool, each run a whole process (chunkheap, or a Python
   subprocess per peer running this same file with `--worker`), wall time measured around the
   process and its peak RSS from GNU time's %M (/usr/bin/time; wait4()'s ru_maxrss without it);
   RSS includes the page-cache pages a memory map touched. Each chunkheap run of a workload bound
   by reading page-cached inputs (READ_BOUND) is paired with one pass of the page-cache read
   probe just before it, and its fraction of the read limit is also given against that probe
   (median over runs), since the shared machine's memory bandwidth drifts within a run. Before
   each tool's runs of a workload its inputs are read once
   (warm page cache); `.npy` inputs found 10 % or more cached in small folios (an earlier
   tool's memory pressure punched holes that were refilled so) are first evicted and read
   back. Then the chunkheap workloads again under `--memory-limit` (default 512MiB;
   `--memory-limit none` skips that pass);
6. checks that every tool's answer agrees with chunkheap's (or NumPy's when chunkheap has none):
   rel. tol 1e-9 for sums and means, exact for min/max/argmax/median and sorted output, equal
   counts for histograms, bit-equal for `a*2+b` written to disk, max|diff| <= 1e-9 max|ref| for
   axis means and matmul;
7. writes harness-SIZE.md (also printed), harness-SIZE.csv and harness-SIZE.png (bar chart) into
   `--out`, and removes everything else it made (Ctrl-C included).

Workload names for --only: stats, sum, mean_std, sum_expr, write_expr, hist, minmax, median,
sort, axis_mean, matmul. The chunkheap command lines are in CHUNKHEAP_COMMANDS just below;
a command that fails (e.g. a subcommand the binary does not have yet) is reported as
"not available" with the first line of its stderr.
"""

# ---------------------------------------------------------------------------------------------
# The chunkheap command lines: the one place to adjust them. `{a}`, `{b}`, `{m}`, `{s}`, `{x}`,
# `{y}` are dataset paths, `{out}` an output path. Each workload lists alternatives tried in
# order; an alternative is a list of command lines run one after the other (timed together). The
# first alternative that succeeds is used for all runs. Global flags (`--memory-limit`) are put
# before the subcommand by the harness.
# ---------------------------------------------------------------------------------------------
CHUNKHEAP_COMMANDS = {
    "stats": [[["stats", "{a}", "--json"]]],
    "sum": [[["eval", "sum(a)", "a={a}"]]],
    "mean_std": [
        [["eval", "mean(a), std(a)", "a={a}"]],
        [["eval", "mean(a)", "a={a}"], ["eval", "std(a)", "a={a}"]],
    ],
    "sum_expr": [[["eval", "sum(a*2+b)", "a={a}", "b={b}"]]],
    "write_expr": [[["eval", "a*2+b", "a={a}", "b={b}", "-o", "{out}"]]],
    "hist": [[["hist", "{a}", "--bins", "100"]]],
    "minmax": [
        [["eval", "min(a), max(a), argmax(a)", "a={a}"]],
        [["eval", "min(a)", "a={a}"], ["eval", "max(a)", "a={a}"], ["eval", "argmax(a)", "a={a}"]],
    ],
    "median": [[["quantile", "{a}", "0.5", "--json"]]],
    "sort": [[["sort", "{s}", "-o", "{out}"]]],
    "axis_mean": [[["eval", "mean(m, axis=1)", "m={m}", "-o", "{out}"]]],
    "matmul": [[["eval", "x @ y", "x={x}", "y={y}", "-o", "{out}"]]],
}

# What each workload reads (dataset keys), what it produces, and a short description.
WORKLOADS = {
    "stats": (["a"], "values", "stats: sum, mean, std, min, max, argmin, argmax, NaN count"),
    "sum": (["a"], "values", "sum(a)"),
    "mean_std": (["a"], "values", "mean(a), std(a)"),
    "sum_expr": (["a", "b"], "values", "sum(a*2+b)"),
    "write_expr": (["a", "b"], "file", "c = a*2+b written to .npy"),
    "hist": (["a"], "hist", "histogram, 100 bins over [min, max]"),
    "minmax": (["a"], "values", "min(a), max(a), argmax(a)"),
    "median": (["a"], "values", "median(a)"),
    "sort": (["s"], "file", "sort of s.npy to .npy"),
    "axis_mean": (["m"], "file", "mean(m, axis=1) of (N/1024, 1024) to .npy"),
    "matmul": (["x", "y"], "file", "x @ y (n x n f64) to .npy"),
}

# Workloads bound by reading their page-cached inputs: each chunkheap run of these is paired with
# a read probe just before it (see `Bench.paired_probe`).
READ_BOUND = {"stats", "sum", "mean_std", "sum_expr", "hist", "minmax", "median", "axis_mean"}

# Peers and the workloads each has. Dask on Zarr covers the 1-D workloads on a/b.
PEERS = {
    "numpy_mmap": ["sum", "mean_std", "sum_expr", "write_expr", "hist", "minmax", "median", "sort",
                   "axis_mean", "matmul"],
    "numpy_ram": ["sum", "mean_std", "sum_expr", "write_expr", "hist", "minmax", "median", "sort",
                  "axis_mean", "matmul"],
    "numexpr": ["sum", "mean_std", "sum_expr", "write_expr"],
    "dask_mmap": ["sum", "mean_std", "sum_expr", "write_expr", "hist", "minmax", "median",
                  "axis_mean", "matmul"],
    "dask_zarr": ["sum", "mean_std", "sum_expr", "write_expr", "hist", "minmax", "median"],
    "pyarrow": ["sum", "mean_std", "minmax", "median"],
}

PEER_LABEL = {
    "numpy_mmap": "NumPy (np.load mmap_mode='r')",
    "numpy_ram": "NumPy (np.load into RAM)",
    "numexpr": "numexpr on memmaps",
    "dask_mmap": "Dask (from_array on memmap)",
    "dask_zarr": "Dask (from_zarr)",
    "pyarrow": "pyarrow.compute",
}

# What each peer does, for the notes column.
PEER_NOTES = {
    ("numpy_mmap", "median"): "np.median: exact, copies the array into RAM",
    ("numpy_ram", "median"): "np.median: exact, in RAM",
    ("dask_mmap", "median"): "da.percentile(50): approximate",
    ("dask_zarr", "median"): "da.percentile(50): approximate",
    ("pyarrow", "median"): "pc.quantile(0.5): exact, copies into RAM",
    ("pyarrow", "minmax"): "pc.min_max + pc.index(max) for argmax",
    ("numpy_mmap", "sum_expr"): "a*2+b materialised in RAM",
    ("numpy_mmap", "mean_std"): "std materialises a-mean in RAM",
    ("numpy_mmap", "write_expr"): "np.save(a*2+b): temp in RAM",
    ("numpy_ram", "write_expr"): "np.save(a*2+b)",
    ("numexpr", "write_expr"): "ne.evaluate(out=open_memmap)",
    ("numexpr", "mean_std"): "two passes: sum, then sum((a-mu)**2)",
    ("dask_mmap", "write_expr"): "da.store into open_memmap",
    ("dask_zarr", "write_expr"): "da.store into open_memmap",
    ("dask_mmap", "hist"): "min/max pass, then da.histogram(range=)",
    ("dask_zarr", "hist"): "min/max pass, then da.histogram(range=)",
    ("numpy_mmap", "sort"): "np.sort copies into RAM",
    ("numpy_mmap", "matmul"): "BLAS on memmaps",
    ("numpy_ram", "matmul"): "BLAS in RAM",
    ("dask_mmap", "matmul"): "blocked, 2048-wide chunks",
}

MiB = 1 << 20
GiB = 1 << 30
PEER_PACKAGES = ["numpy", "numexpr", "dask[array]", "zarr>=3", "pyarrow", "psutil", "matplotlib"]
PEER_IMPORTS = "import numpy, numexpr, dask.array, zarr, pyarrow, pyarrow.compute, psutil, matplotlib"

import argparse
import csv
import io
import json
import math
import mmap
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def parse_size(s):
    """512MiB, 4GiB, 1.5G (bare K/M/G/T are binary), 2GB (decimal), 4096."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r} (expected e.g. 512MiB, 4GiB)")
    units = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": MiB, "mib": MiB, "g": GiB,
             "gib": GiB, "t": 1 << 40, "tib": 1 << 40, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
    u = m.group(2).lower()
    if u not in units:
        raise argparse.ArgumentTypeError(f"unknown unit {m.group(2)!r} in {s!r}")
    return int(float(m.group(1)) * units[u])


def size_label(n):
    for unit, f in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= f and n % (f // 1024 or 1) == 0 and n / f >= 1:
            v = n / f
            return f"{v:g}{unit}"
    return f"{n}B"


# ---------------------------------------------------------------------------------------------
# Process running: wall time and peak RSS of exactly one child.
# ---------------------------------------------------------------------------------------------

CURRENT_CHILD = None  # the child running now, killed on Ctrl-C


class Run:
    def __init__(self, rc, wall, rss, stdout, stderr):
        self.rc, self.wall, self.rss, self.stdout, self.stderr = rc, wall, rss, stdout, stderr

    def first_err(self):
        for line in self.stderr.splitlines():
            if line.strip():
                return line.strip()
        return f"exit code {self.rc}"


# Peak RSS: a child's ru_maxrss also counts the image it was forked from (on exec Linux keeps
# the larger of the old and new high-water marks, and Python spawns with vfork), so the harness's
# own peak would be a floor under every figure. GNU time is a tiny process that forks the command
# itself, so its %M is the command's own peak. Without it, wait4() is used and the floor noted.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_process(cmd, timeout, env=None, cwd=None):
    """Runs cmd; returns Run with wall seconds and this process's peak RSS in bytes."""
    global CURRENT_CHILD
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="harness-rss-") as rssf:
        if GNU_TIME:
            cmd = [GNU_TIME, "-f", "%M", "-o", rssf.name] + list(cmd)
        t0 = time.perf_counter()
        # own process group, so a timeout or Ctrl-C can stop the command and all it started
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                             cwd=cwd, start_new_session=True)
        CURRENT_CHILD = p
        deadline = t0 + timeout
        timed_out = False
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    break
                if time.perf_counter() > deadline:
                    kill_group(p)
                    pid, status, ru = os.wait4(p.pid, 0)
                    timed_out = True
                    break
                time.sleep(0.002)
        finally:
            CURRENT_CHILD = None
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        so = out.read().decode("utf-8", "replace")
        se = err.read().decode("utf-8", "replace")
        rss = ru.ru_maxrss * 1024
        if GNU_TIME:
            nums = re.findall(r"^\d+$", open(rssf.name).read(), re.M)
            if nums:
                rss = int(nums[-1]) * 1024
        if timed_out:
            se = f"timed out after {timeout:.0f} s\n" + se
            return Run(-1, wall, rss, so, se)
        return Run(p.returncode, wall, rss, so, se)


def kill_group(p):
    """SIGKILL to the child's process group (the child, GNU time's child, Dask's workers)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_current_child():
    p = CURRENT_CHILD
    if p is not None:
        kill_group(p)
        try:
            os.waitpid(p.pid, 0)
        except ChildProcessError:
            pass


# ---------------------------------------------------------------------------------------------
# Build and venv
# ---------------------------------------------------------------------------------------------

def build_chunkheap():
    target = os.environ.get("CARGO_TARGET_DIR")
    target = Path(target) if target else REPO / "target"
    if not target.is_absolute():
        target = REPO / target
    log(f"== building chunkheap: cargo build --release (in {REPO}, target dir {target})")
    r = subprocess.run(["cargo", "build", "--release"], cwd=REPO)
    if r.returncode != 0:
        sys.exit(f"harness: cargo build --release failed (exit {r.returncode}); cannot benchmark")
    binary = target / "release" / "chunkheap"
    if not binary.exists():
        sys.exit(f"harness: built, but {binary} is missing")
    return str(binary)


def venv_dir():
    return Path(os.environ.get("TMPDIR") or "/tmp") / "chunkheap-bench-venv"


def ensure_venv():
    """Returns the venv's python, or None (with a clear message) if the peers cannot be set up."""
    vd = venv_dir()
    py = vd / "bin" / "python"
    if py.exists():
        r = subprocess.run([str(py), "-c", PEER_IMPORTS], capture_output=True, text=True)
        if r.returncode == 0:
            log(f"== peers: reusing venv {vd}")
            return str(py)
    log(f"== peers: setting up venv {vd} (pip install {' '.join(PEER_PACKAGES)})")
    r = subprocess.run([sys.executable, "-m", "venv", "--clear" if not py.exists() else "--upgrade",
                        str(vd)])
    if r.returncode != 0 or not py.exists():
        r = subprocess.run([sys.executable, "-m", "venv", "--clear", str(vd)])
    if r.returncode != 0 or not py.exists():
        log("!! could not create the venv (python3 -m venv failed): running chunkheap alone")
        return None
    r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check",
                        "--progress-bar", "off", "-q"] + PEER_PACKAGES)
    if r.returncode != 0:
        log(f"!! pip install failed (exit {r.returncode}): NO PEERS, running chunkheap alone")
        return None
    r = subprocess.run([str(py), "-c", PEER_IMPORTS], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"!! peers installed but do not import: {r.stderr.strip().splitlines()[-1:]}; "
            "running chunkheap alone")
        return None
    return str(py)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

def npy_header(path):
    """(descr, fortran_order, shape, header_len) of a .npy file, stdlib only; None if unreadable."""
    import ast
    import struct
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
            if magic[:6] != b"\x93NUMPY":
                return None
            if magic[6] == 1:
                (hl,) = struct.unpack("<H", f.read(2))
                off = 10
            else:
                (hl,) = struct.unpack("<I", f.read(4))
                off = 12
            d = ast.literal_eval(f.read(hl).decode("latin1"))
            return d["descr"], d["fortran_order"], tuple(d["shape"]), off + hl
    except Exception:
        return None


def npy_ok(path, shape):
    h = npy_header(path)
    if h is None:
        return False
    descr, fortran, shp, hl = h
    n = 1
    for s in shape:
        n *= s
    return (descr in ("<f8", "=f8") and not fortran and shp == tuple(shape)
            and os.path.getsize(path) == hl + 8 * n)


def zarr_ok(path, shape, chunks):
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
        grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
        return tuple(meta["shape"]) == tuple(shape) and tuple(grid) == tuple(chunks)
    except Exception:
        return False


class Datasets:
    def __init__(self, d, size, binary, needed):
        self.dir = Path(d)
        self.bin = binary
        n = max(1024, (size // 8) // 1024 * 1024)
        self.n = n
        self.zchunk = min(n, 8 * MiB)  # 64 MiB of f64
        sort_bytes = min(512 * MiB, size)
        self.ns = max(1, sort_bytes // 8)
        side = int(math.isqrt(max(size, 1) // 64)) // 64 * 64
        self.mat_n = max(64, min(8192, side))
        self.shapes = {
            "a": (n,), "b": (n,), "m": (n // 1024, 1024), "s": (self.ns,),
            "x": (self.mat_n, self.mat_n), "y": (self.mat_n, self.mat_n),
        }
        self.seeds = {"a": 1, "b": 2, "m": 3, "s": 4, "x": 5, "y": 6}
        self.needed = needed

    def path(self, key):
        if key.endswith("_zarr"):
            return str(self.dir / f"{key[:-5]}.zarr")
        return str(self.dir / f"{key}.npy")

    def nbytes(self, key):
        n = 1
        for s in self.shapes[key]:
            n *= s
        return n * 8

    def make(self):
        for key in self.needed:
            if key.endswith("_zarr"):
                base = key[:-5]
                p = self.path(key)
                if zarr_ok(p, self.shapes[base], (self.zchunk,)):
                    log(f"   reusing {p}")
                    continue
                shutil.rmtree(p, ignore_errors=True)
                cmd = [self.bin, "--progress", "never", "convert", self.path(base), p,
                       "--chunks", str(self.zchunk)]
            else:
                p = self.path(key)
                if npy_ok(p, self.shapes[key]):
                    log(f"   reusing {p}")
                    continue
                cmd = [self.bin, "--progress", "never", "gen", p, "--shape",
                       ",".join(map(str, self.shapes[key])), "--dtype", "f64", "--dist", "normal",
                       "--seed", str(self.seeds[key])]
            log("   " + " ".join(cmd))
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"harness: generating {p} failed: {r.stderr.strip()}")


def files_of(paths):
    """The files named by `paths`, a directory standing for every file under it."""
    out = []
    for p in paths:
        out += [p] if os.path.isfile(p) else [os.path.join(r, f) for r, _, fs in os.walk(p)
                                               for f in fs]
    return out


def touch(paths):
    """Reads every file once (directories: every file in them), to warm the page cache."""
    buf = bytearray(8 * MiB)
    total = 0
    for p in paths:
        for fp in files_of([p]):
            with open(fp, "rb", buffering=0) as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    total += k
    return total


def small_folio_share(paths, regions=128):
    """The share of 2 MiB regions of the (page-cached) files that the page cache holds in small
    folios, or None where it cannot be told. `regions` regions per file, chosen at random (seeded;
    evenly spaced ones can fall in step with how the cache was filled), are each mapped afresh
    and touched at 8 places 256 KiB apart; one page fault maps a 2 MiB folio whole, small ones
    take one each. Files the kernel caches in small folios (after scattered faults through a
    map, or holes punched by memory pressure and refilled by small reads) cost every reader
    through a map a fault per 16 pages (chunkheap reads such ranges with pread instead). Call
    right after `touch`, so that every probed page is cached and probing reads nothing from
    disk."""
    if not hasattr(resource, "RUSAGE_THREAD"):
        return None
    small = probed = 0
    for fp in files_of(paths):
        size = os.path.getsize(fp)
        n = size // (2 * MiB)
        if n == 0:
            continue
        rng = random.Random(n)
        with open(fp, "rb") as f:
            for i in rng.sample(range(n), min(regions, n)):
                at = i * 2 * MiB
                m = mmap.mmap(f.fileno(), 2 * MiB, prot=mmap.PROT_READ, offset=at)
                before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
                for o in range(0, 2 * MiB, 256 * 1024):
                    m[o]
                faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
                m.close()
                probed += 1
                small += faults > 2
    return small / probed if probed else None


# ---------------------------------------------------------------------------------------------
# Machine limits
# ---------------------------------------------------------------------------------------------

def pread_throughput(path, threads, repeats=3):
    size = os.path.getsize(path)
    block = 8 * MiB
    nblocks = (size + block - 1) // block
    best = 0.0
    for _ in range(repeats):
        counter = iter(range(nblocks))
        lock = threading.Lock()
        fd = os.open(path, os.O_RDONLY)

        def work():
            buf = bytearray(block)
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                os.preadv(fd, [buf], i * block)

        ts = [threading.Thread(target=work) for _ in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        os.close(fd)
        best = max(best, size / dt / 1e9)
    return best


def memcpy_bandwidth(nbytes=GiB, repeats=3):
    src = bytearray(nbytes)
    src[::4096] = b"\x01" * len(range(0, nbytes, 4096))  # fault the pages in
    dst = bytearray(nbytes)
    dst[::4096] = b"\x01" * len(range(0, nbytes, 4096))
    ms, md = memoryview(src), memoryview(dst)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        md[:] = ms
        best = min(best, time.perf_counter() - t0)
    del ms, md, src, dst
    return nbytes / best / 1e9


def write_throughput(d, nbytes, repeats=3):
    """(best GB/s of `repeats` writes of nbytes to a new file through the page cache, no fsync;
    best GB/s of `repeats` O_DIRECT writes, or None where the file system refuses O_DIRECT; GB/s
    of one page-cache write + fsync). Writes here vary a lot from run to run (shared disk), hence
    the best of several, alternating the two kinds."""
    path = os.path.join(d, f"harness-write-probe-{os.getpid()}.bin")
    # An anonymous map is page-aligned, as O_DIRECT wants its memory.
    buf = mmap.mmap(-1, 8 * MiB)
    buf.write(os.urandom(8 * MiB))
    view = memoryview(buf)

    def once(sync, direct=False):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
        t0 = time.perf_counter()
        fd = os.open(path, flags, 0o644)
        try:
            written = 0
            while written < nbytes:
                written += os.write(fd, view[: min(len(view), nbytes - written)])
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        dt = time.perf_counter() - t0
        os.unlink(path)
        return nbytes / dt / 1e9

    def direct_once():
        try:
            return once(False, direct=True)
        except OSError:
            return None

    try:
        plain, direct = [], []
        for _ in range(repeats):
            plain.append(once(False))
            direct.append(direct_once())
        direct = [x for x in direct if x is not None]
        return max(plain), (max(direct) if direct else None), once(True)
    finally:
        view.release()
        buf.close()
        if os.path.exists(path):
            os.unlink(path)


# ---------------------------------------------------------------------------------------------
# Answers: parsing chunkheap's output and comparing
# ---------------------------------------------------------------------------------------------

NUM_RE = re.compile(r"(?<![\w.])[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)(?![\w.])",
                    re.IGNORECASE)


def flatten(v):
    if isinstance(v, dict):
        return [x for val in v.values() for x in flatten(val)]
    if isinstance(v, (list, tuple)):
        return [x for val in v for x in flatten(val)]
    if isinstance(v, bool) or v is None:
        return []
    if isinstance(v, (int, float)):
        return [v]
    return []


def numbers(text):
    """The numbers a command printed, in order: JSON if it is JSON, else numeric tokens (after the
    last '=' or ':' of a line, with function calls such as sum(a*2+b) removed)."""
    text = text.strip()
    try:
        return flatten(json.loads(text))
    except ValueError:
        pass
    vals = []
    for line in text.splitlines():
        if "=" in line:
            line = line.rsplit("=", 1)[1]
        elif ":" in line:
            line = line.split(":", 1)[1]
        line = re.sub(r"[A-Za-z_]\w*\([^()]*\)", " ", line)
        for tok in NUM_RE.findall(line):
            vals.append(int(tok) if re.fullmatch(r"[-+]?\d+", tok) else float(tok))
    return vals


def parse_hist(text, bins=100):
    text = text.strip()
    try:
        v = json.loads(text)
        if isinstance(v, dict):
            for k in ("counts", "hist", "histogram", "count"):
                if k in v:
                    edges = v.get("edges") or v.get("bin_edges")
                    return {"counts": [int(c) for c in v[k]],
                            "edges": [edges[0], edges[-1]] if edges else None}
        if isinstance(v, list) and len(v) == bins:
            return {"counts": [int(c) for c in v], "edges": None}
    except (ValueError, TypeError):
        pass
    rows = [numbers(line) for line in text.splitlines()]
    rows = [r for r in rows if r and isinstance(r[-1], int)]
    if len(rows) > bins:  # a header or footer line with an integer in it: keep bin-like lines
        rows = [r for r in rows if len(r) >= 2]
    if len(rows) == bins:
        edges = [rows[0][0], rows[-1][-2]] if all(len(r) >= 3 for r in rows) else None
        return {"counts": [r[-1] for r in rows], "edges": edges}
    return None


def chunkheap_answer(wl, stdout):
    """Parses chunkheap's stdout into the workload's answer; None if it cannot."""
    kind = WORKLOADS[wl][1]
    if kind == "file":
        return None
    if wl == "stats":
        try:
            d = json.loads(stdout)
            return [d["sum"], d["mean"], d["std"], d["min"], d["max"], d["argmax"]]
        except (ValueError, KeyError):
            return None
    if kind == "hist":
        return parse_hist(stdout)
    if wl == "median":
        # `quantile --json`: {"quantiles": [0.5], "values": [...], "passes": N}; the plain table
        # also prints the quantile itself, which must not be taken for the answer.
        try:
            return [float(json.loads(stdout)["values"][0])]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
    want = {"sum": 1, "mean_std": 2, "sum_expr": 1, "minmax": 3}[wl]
    v = numbers(stdout)
    return v[:want] if len(v) >= want else None


def close(x, y, rel):
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return abs(x - y) <= rel * max(abs(x), abs(y)) + 1e-300


def compare(wl, ref, got, approx=False):
    """(ok or None if unchecked, short note)."""
    if ref is None or got is None:
        return None, "answer not parsed" if got is None else "no reference"
    if wl == "hist":
        rc, gc = ref["counts"], got["counts"]
        if len(rc) != len(gc):
            return False, f"{len(gc)} bins vs {len(rc)}"
        diff = sum(abs(a - b) for a, b in zip(rc, gc))
        return (diff == 0), ("counts equal" if diff == 0 else f"counts differ by {diff} in total")
    if len(ref) != len(got):
        return False, f"{len(got)} values vs {len(ref)}"
    # tolerances per position: sums/means/std relative 1e-9, extremes/indices/median exact
    exact = {"minmax": [True, True, True], "median": [True], "stats": [False, False, False, True,
                                                                           True, True]}
    worst = 0.0
    for i, (r, g) in enumerate(zip(ref, got)):
        is_exact = exact.get(wl, [False] * len(ref))[i] and not approx
        if is_exact:
            if not (r == g or (isinstance(r, float) and math.isnan(r) and math.isnan(g))):
                rel = abs(r - g) / max(abs(r), 1e-300)
                if approx:
                    worst = max(worst, rel)
                    continue
                return False, f"value {i}: {g!r} vs {r!r}"
        else:
            rel = abs(r - g) / max(abs(r), abs(g), 1e-300)
            worst = max(worst, rel)
            if not approx and not close(float(r), float(g), 1e-9):
                return False, f"value {i}: {g!r} vs {r!r} (rel {rel:.1e})"
    if approx:
        d = max(abs(r - g) for r, g in zip(ref, got))
        return None, f"approx.: {got[0]:.4g} vs exact {ref[0]:.4g} (|diff| {d:.1e})"
    return True, "equal" if worst == 0 else f"max rel. diff {worst:.1e}"


# ---------------------------------------------------------------------------------------------
# Peer worker (runs inside the venv): `python harness.py --worker JSON`
# ---------------------------------------------------------------------------------------------

def worker(spec):
    t_start = time.perf_counter()
    job = spec["job"]
    if job == "peer":
        res = peer_job(spec)
    elif job == "check":
        res = check_job(spec)
    elif job == "membw":
        res = membw_job(spec)
    elif job == "memcpy":
        res = {"memcpy_1": memcpy_bandwidth(spec["nbytes"])}
    elif job == "chart":
        res = chart_job(spec)
    else:
        raise SystemExit(f"unknown job {job}")
    res["total_s"] = time.perf_counter() - t_start
    print(json.dumps(res))


def peer_job(spec):
    tool, wl, f, out = spec["tool"], spec["workload"], spec["files"], spec.get("out")
    t0 = time.perf_counter()
    import numpy as np
    ans = None
    if tool.startswith("numpy"):
        load = (lambda p: np.load(p, mmap_mode="r")) if tool == "numpy_mmap" else np.load
        arrs = {k: load(f[k]) for k in WORKLOADS[wl][0]}
        t1 = time.perf_counter()
        g = arrs.get
        a, b = g("a"), g("b")
        if wl == "sum":
            ans = [float(a.sum())]
        elif wl == "mean_std":
            ans = [float(a.mean()), float(a.std())]
        elif wl == "sum_expr":
            ans = [float((a * 2 + b).sum())]
        elif wl == "write_expr":
            np.save(out, a * 2 + b)
        elif wl == "hist":
            c, e = np.histogram(a, bins=100)
            ans = {"counts": [int(x) for x in c], "edges": [float(e[0]), float(e[-1])]}
        elif wl == "minmax":
            ans = [float(a.min()), float(a.max()), int(a.argmax())]
        elif wl == "median":
            ans = [float(np.median(a))]
        elif wl == "sort":
            np.save(out, np.sort(g("s")))
        elif wl == "axis_mean":
            np.save(out, g("m").mean(axis=1))
        elif wl == "matmul":
            np.save(out, g("x") @ g("y"))
    elif tool == "numexpr":
        import numexpr as ne
        a = np.load(f["a"], mmap_mode="r")
        b = np.load(f["b"], mmap_mode="r") if "b" in WORKLOADS[wl][0] else None
        t1 = time.perf_counter()
        if wl == "sum":
            ans = [float(ne.evaluate("sum(a)"))]
        elif wl == "mean_std":
            mu = float(ne.evaluate("sum(a)")) / a.size
            var = float(ne.evaluate("sum((a - mu) ** 2)")) / a.size
            ans = [mu, math.sqrt(var)]
        elif wl == "sum_expr":
            ans = [float(ne.evaluate("sum(a * 2 + b)"))]
        elif wl == "write_expr":
            o = np.lib.format.open_memmap(out, mode="w+", dtype=np.float64, shape=a.shape)
            ne.evaluate("a * 2 + b", out=o)
            o.flush()
            del o
    elif tool.startswith("dask"):
        import dask
        import dask.array as da
        keys = WORKLOADS[wl][0]
        if tool == "dask_zarr":
            arrs = {k: da.from_zarr(f[k + "_zarr"]) for k in keys}
        else:
            def chunks_for(mm):
                if mm.ndim == 1:
                    return (8 * MiB,)
                if wl == "matmul":
                    return (2048, 2048)
                return (max(1, 8 * MiB // mm.shape[1]), mm.shape[1])
            arrs = {}
            for k in keys:
                mm = np.load(f[k], mmap_mode="r")
                arrs[k] = da.from_array(mm, chunks=chunks_for(mm))
        t1 = time.perf_counter()
        a, b = arrs.get("a"), arrs.get("b")

        def store(x):
            o = np.lib.format.open_memmap(out, mode="w+", dtype=np.float64, shape=x.shape)
            da.store(x, o, lock=False)
            o.flush()

        if wl == "sum":
            ans = [float(a.sum().compute())]
        elif wl == "mean_std":
            ans = [float(v) for v in dask.compute(a.mean(), a.std())]
        elif wl == "sum_expr":
            ans = [float((a * 2 + b).sum().compute())]
        elif wl == "write_expr":
            store(a * 2 + b)
        elif wl == "hist":
            mn, mx = dask.compute(a.min(), a.max())
            h, e = da.histogram(a, bins=100, range=(float(mn), float(mx)))
            c = h.compute()
            ans = {"counts": [int(x) for x in c], "edges": [float(mn), float(mx)]}
        elif wl == "minmax":
            mn, mx, am = dask.compute(a.min(), a.max(), a.argmax())
            ans = [float(mn), float(mx), int(am)]
        elif wl == "median":
            ans = [float(da.percentile(a, [50]).compute()[0])]
        elif wl == "axis_mean":
            store(arrs["m"].mean(axis=1))
        elif wl == "matmul":
            store(arrs["x"] @ arrs["y"])
    elif tool == "pyarrow":
        import pyarrow as pa
        import pyarrow.compute as pc
        mm = np.load(f["a"], mmap_mode="r")
        arr = pa.array(mm)  # zero-copy for a contiguous float64 array without nulls
        t1 = time.perf_counter()
        if wl == "sum":
            ans = [pc.sum(arr).as_py()]
        elif wl == "mean_std":
            ans = [pc.mean(arr).as_py(), pc.stddev(arr, ddof=0).as_py()]
        elif wl == "minmax":
            r = pc.min_max(arr)
            mx = r["max"].as_py()
            ans = [r["min"].as_py(), mx, pc.index(arr, mx).as_py()]
        elif wl == "median":
            ans = [pc.quantile(arr, q=0.5, interpolation="linear")[0].as_py()]
    else:
        raise SystemExit(f"unknown peer {tool}")
    t2 = time.perf_counter()
    return {"answer": ans, "load_s": t1 - t0, "compute_s": t2 - t1}


def check_job(spec):
    """Compares two .npy outputs block by block."""
    import numpy as np
    r = np.load(spec["ref"], mmap_mode="r")
    g = np.load(spec["got"], mmap_mode="r")
    if r.shape != g.shape:
        return {"ok": False, "note": f"shape {g.shape} vs {r.shape}"}
    if g.dtype != r.dtype:
        return {"ok": False, "note": f"dtype {g.dtype} vs {r.dtype}"}
    rf, gf = r.reshape(-1), g.reshape(-1)
    step = 4 * MiB
    max_abs = 0.0
    scale = 0.0
    for i in range(0, rf.size, step):
        x, y = np.asarray(rf[i:i + step]), np.asarray(gf[i:i + step])
        both_nan = np.isnan(x) & np.isnan(y)
        d = np.where(both_nan, 0.0, np.abs(x - y))
        if np.isnan(d).any():
            return {"ok": False, "note": "NaN where the reference has none"}
        max_abs = max(max_abs, float(d.max(initial=0.0)))
        scale = max(scale, float(np.abs(x[~np.isnan(x)]).max(initial=0.0)))
    tol = spec["tol"]
    if max_abs == 0.0:
        return {"ok": True, "note": "equal"}
    rel = max_abs / scale if scale else math.inf
    return {"ok": bool(rel <= tol), "note": f"max|diff| {rel:.1e} of max|ref|"}


def membw_job(spec):
    import numpy as np
    n = spec["nbytes"] // 8
    threads = spec["threads"]
    src = np.random.default_rng(0).standard_normal(n)
    dst = np.empty_like(src)
    dst.fill(0)
    res = {}

    def timed(fn, parts):
        best = math.inf
        for _ in range(3):
            bounds = np.linspace(0, n, parts + 1).astype(int)
            ts = [threading.Thread(target=fn, args=(bounds[i], bounds[i + 1]))
                  for i in range(parts)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            best = min(best, time.perf_counter() - t0)
        return n * 8 / best / 1e9

    def copy(lo, hi):
        np.copyto(dst[lo:hi], src[lo:hi])

    def total(lo, hi):
        src[lo:hi].sum()

    res["copy_1"] = timed(copy, 1)
    res["copy_all"] = timed(copy, threads)
    res["sum_1"] = timed(total, 1)
    res["sum_all"] = timed(total, threads)
    res["numpy"] = np.__version__
    return res


def chart_job(spec):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = spec["rows"]
    wls = []
    for r in rows:
        if r["workload"] not in wls:
            wls.append(r["workload"])
    ncol = 3
    nrow = (len(wls) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 0.5 + 2.6 * nrow), squeeze=False)
    for ax, wl in zip(axes.flat, wls):
        rs = [r for r in rows if r["workload"] == wl]
        labels = [r["tool"] for r in rs]
        vals = [r["median_s"] for r in rs]
        colors = ["tab:red" if r["tool"].startswith("chunkheap") else "tab:blue" for r in rs]
        y = range(len(rs))
        ax.barh(list(y), vals, color=colors)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(wl, fontsize=9)
        ax.set_xlabel("median wall s (whole process)", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        for yi, v in zip(y, vals):
            ax.text(v, yi, f" {v:.2f}", va="center", fontsize=6)
    for ax in list(axes.flat)[len(wls):]:
        ax.axis("off")
    fig.suptitle(spec["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(spec["png"], dpi=110)
    return {"ok": True}


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, binary, py, ds, cleanup):
        self.args, self.bin, self.py, self.ds = args, binary, py, ds
        self.cleanup = cleanup
        self.rows = []
        self.outdir = ds.dir / "harness-out"
        self.outdir.mkdir(exist_ok=True)
        cleanup.append(str(self.outdir))
        self.peer_env = dict(os.environ)
        self.openblas_note = None
        if "OPENBLAS_CORETYPE" in os.environ or "OPENBLAS_L2_SIZE" in os.environ:
            self.openblas_note = ("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE were set "
                                  f"({os.environ.get('OPENBLAS_CORETYPE')}, "
                                  f"{os.environ.get('OPENBLAS_L2_SIZE')}); unset for the peers")
            self.peer_env.pop("OPENBLAS_CORETYPE", None)
            self.peer_env.pop("OPENBLAS_L2_SIZE", None)

    def files(self):
        return {k: self.ds.path(k) for k in ["a", "b", "m", "s", "x", "y", "a_zarr", "b_zarr"]}

    def input_bytes(self, wl):
        return sum(self.ds.nbytes(k) for k in WORKLOADS[wl][0])

    def fmt(self, wl, out):
        f = self.files()
        f["out"] = out
        return f

    def out_path(self, wl, tool):
        return str(self.outdir / f"{wl}-{tool}.npy")

    def warm(self, wl, tool):
        """Reads the workload's inputs once. Inputs that an earlier tool left cached in small
        folios (see `small_folio_share`: 10 % of regions or more, where the 0.5-4 GiB inputs read
        back once show 1-7 %, their first regions read before read-ahead grew; the in-RAM peers' memory
        pressure evicts parts of them, and the holes are refilled in small folios) are evicted
        and read back first, so that no tool runs on a cache another one fragmented. Returns the
        share left in small folios."""
        keys = [k + "_zarr" if tool == "dask_zarr" else k for k in WORKLOADS[wl][0]]
        paths = [self.ds.path(k) for k in keys]
        touch(paths)
        # Single files only: a store's many chunk files are each read from their start, and stay
        # partly in small folios however often they are read back.
        files = [p for p in paths if os.path.isfile(p)]
        share = small_folio_share(files) if files else None
        if share is not None and share >= 0.10:
            fresh_cache(files)
            was, share = share, small_folio_share(files)
            log(f"   (inputs of {tool}: {was:.0%} of 2 MiB regions cached in small folios; "
                f"evicted and read back: {share:.0%})")
        return share

    def remove(self, p):
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.unlink(p)
        # chunkheap's atomic writers leave `NAME.partial-*` only if killed; sweep them too
        d, base = os.path.split(p)
        for name in os.listdir(d):
            if name.startswith(base + ".partial-") or name.startswith("." + base):
                full = os.path.join(d, name)
                shutil.rmtree(full, ignore_errors=True) if os.path.isdir(full) else os.unlink(full)

    # --- chunkheap ---
    def run_chunkheap(self, wl, limit=None):
        tool = "chunkheap" if limit is None else f"chunkheap --memory-limit {limit}"
        out = self.out_path(wl, "chunkheap" if limit is None else "chunkheap-lim")
        glob = ["--progress", "never"] + (["--memory-limit", limit] if limit else [])
        small = self.warm(wl, "chunkheap")
        chosen, walls, rsss, last, errors, probes = None, [], [], None, [], []
        for alt in CHUNKHEAP_COMMANDS[wl]:
            cmds = [[self.bin] + glob + [a.format(**self.fmt(wl, out)) for a in c] for c in alt]
            self.remove(out)
            probe = self.paired_probe(wl)
            res = self._run_seq(cmds)
            if res[0] is None:
                errors.append(res[1:])
                continue
            chosen = cmds
            probes.append(probe)
            walls.append(res[0])
            rsss.append(res[1])
            last = res[2]
            break
        row = {"workload": wl, "tool": tool, "runs": [], "small_folios": small}
        if chosen is None:
            # clap's usage errors (unknown subcommand or flag) exit with 2; chunkheap's own 1
            msg, rc = errors[0]
            status = "failed"
            if msg.startswith("timed out"):
                status = "timeout"
            elif rc == 2 or re.search(r"not available|not implemented|unknown function|"
                                      r"unrecognized|unexpected argument", msg, re.I):
                status = "not available"
            row.update(status=status, notes=msg[:160])
            log(f"   {tool:<40} {status}: {msg[:120]}")
            self.rows.append(row)
            return row
        for _ in range(self.args.runs - 1):
            self.remove(out)
            probes.append(self.paired_probe(wl))
            res = self._run_seq(chosen)
            if res[0] is None:
                row.update(status="failed", notes=res[1][:160])
                log(f"   {tool:<40} failed: {res[1][:120]}")
                self.rows.append(row)
                return row
            walls.append(res[0])
            rsss.append(res[1])
            last = res[2]
        row.update(status="ok", runs=walls, median_s=statistics.median(walls), rss=max(rsss),
                   probes=probes if None not in probes else None,
                   cmd=" ; ".join(" ".join(c[1:]) for c in chosen), stdout=last,
                   out=out if WORKLOADS[wl][1] == "file" else None,
                   answer=chunkheap_answer(wl, last))
        if len(chosen) > 1:
            row["notes"] = f"{len(chosen)} processes"
        log(f"   {tool:<40} {row['median_s']:8.3f} s  {row['rss'] / MiB:8.0f} MiB  "
            f"-> {last.strip()[:100]!r}")
        self.rows.append(row)
        return row

    def paired_probe(self, wl):
        """For a workload bound by reading its page-cached inputs: the page-cache read
        throughput of its first input with all threads (as the limits section measures it, one
        pass), measured right before a chunkheap run, so that the run's fraction of the read
        limit compares two reads seconds apart. This shared machine's memory bandwidth moves
        between states for minutes at a time (2-thread reads of the same cached file at 42-44
        GB/s in one minute, 60 in the next); a limit taken once, as the best of 3, and set
        against a median taken minutes later says more about the moment than about the code.
        None for other workloads."""
        if wl not in READ_BOUND:
            return None
        return pread_throughput(self.ds.path(WORKLOADS[wl][0][0]), os.cpu_count() or 1,
                                repeats=1)

    def _run_seq(self, cmds):
        wall, rss, out = 0.0, 0, ""
        for c in cmds:
            r = run_process(c, self.args.timeout)
            if r.rc != 0:
                return None, r.first_err(), r.rc
            wall += r.wall
            rss = max(rss, r.rss)
            out += r.stdout
        return wall, rss, out

    # --- peers ---
    def run_peer(self, wl, tool):
        out = self.out_path(wl, tool)
        spec = {"job": "peer", "tool": tool, "workload": wl, "files": self.files(), "out": out}
        cmd = [self.py, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        small = self.warm(wl, tool)
        row = {"workload": wl, "tool": tool, "runs": [], "small_folios": small}
        walls, rsss, comp, load = [], [], [], []
        ans = None
        for _ in range(self.args.runs):
            self.remove(out)
            r = run_process(cmd, self.args.timeout, env=self.peer_env)
            if r.rc != 0:
                err = [l for l in r.stderr.strip().splitlines() if l.strip()]
                msg = err[-1] if err else f"exit {r.rc}"
                status = "failed"
                if r.stderr.startswith("timed out"):
                    msg, status = err[0], "timeout"
                row.update(status=status, notes=msg[:160])
                log(f"   {tool:<40} {status}: {msg[:120]}")
                self.rows.append(row)
                return row
            res = json.loads(r.stdout.strip().splitlines()[-1])
            walls.append(r.wall)
            rsss.append(r.rss)
            comp.append(res["compute_s"])
            load.append(res["load_s"])
            ans = res["answer"]
        note = PEER_NOTES.get((tool, wl), "")
        inproc = f"in-process {statistics.median(comp):.3f} s"
        if tool == "numpy_ram":
            inproc += f" + load {statistics.median(load):.3f} s"
        row.update(status="ok", runs=walls, median_s=statistics.median(walls), rss=max(rsss),
                   answer=ans, out=out if WORKLOADS[wl][1] == "file" else None,
                   notes="; ".join(x for x in (note, inproc) if x),
                   compute_s=statistics.median(comp))
        log(f"   {tool:<40} {row['median_s']:8.3f} s  {row['rss'] / MiB:8.0f} MiB  ({inproc})")
        self.rows.append(row)
        return row

    def check_file(self, wl, ref, got):
        tol = {"write_expr": 0.0, "sort": 0.0, "axis_mean": 1e-9, "matmul": 1e-9}[wl]
        spec = {"job": "check", "ref": ref, "got": got, "tol": tol}
        r = run_process([self.py, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                        self.args.timeout, env=self.peer_env)
        if r.rc != 0:
            return None, "check failed: " + r.first_err()
        res = json.loads(r.stdout.strip().splitlines()[-1])
        return res["ok"], res["note"]

    def run_workload(self, wl, tools, limit):
        log(f"== {wl}: {WORKLOADS[wl][2]}  (inputs read once before each tool's runs)")
        rows = [self.run_chunkheap(wl)]
        if self.py:
            for tool in tools:
                if wl in PEERS[tool]:
                    rows.append(self.run_peer(wl, tool))
        if limit:
            rows.append(self.run_chunkheap(wl, limit))
        self.check(wl, rows)
        for r in rows:
            if r.get("out"):
                self.remove(r["out"])

    def check(self, wl, rows):
        """Marks every row's answer against the reference: chunkheap's, else NumPy's."""
        if wl == "stats":
            return  # cross-checked against the other workloads at the end
        is_file = WORKLOADS[wl][1] == "file"
        ok_rows = [r for r in rows if r["status"] == "ok"]
        have = [r for r in ok_rows if (r.get("out") if is_file else r.get("answer")) is not None]
        pref = ["chunkheap", "numpy_ram", "numpy_mmap"]
        have.sort(key=lambda r: pref.index(r["tool"]) if r["tool"] in pref else len(pref))
        ref = have[0] if have else None
        if is_file and not self.py:
            ref = None
        for r in ok_rows:
            if r is ref:
                r["check"], r["check_note"] = None, "reference"
            elif is_file:
                if ref is None:
                    r["check"], r["check_note"] = None, "unchecked (no NumPy)"
                else:
                    r["check"], r["check_note"] = self.check_file(wl, ref["out"], r["out"])
            elif ref is None or r.get("answer") is None:
                r["check"], r["check_note"] = None, ("answer not parsed" if r.get("answer") is None
                                                     else "no reference")
            else:
                approx = r["tool"].startswith("dask") and wl == "median"
                r["check"], r["check_note"] = compare(wl, ref["answer"], r["answer"], approx)
            if ref is not None and r is not ref and ref["tool"] != "chunkheap":
                r["check_note"] += f" (vs {ref['tool']})"
        if ref is not None and ref["tool"] == "chunkheap":
            # say on chunkheap's own row whether the others agree with it
            others = [r for r in ok_rows if r is not ref]
            bad = [r["tool"] for r in others if r.get("check") is False]
            good = [r for r in others if r.get("check") is True]
            if bad:
                ref["check"] = False
                ref["check_note"] = "reference; disagrees with " + ", ".join(bad)
            elif good:
                ref["check"] = True
                ref["check_note"] = f"reference; {len(good)} of {len(others)} agree, none differ"

    def cross_check_stats(self):
        """chunkheap stats --json against the reference answers of sum, mean_std and minmax."""
        st = next((r for r in self.rows if r["workload"] == "stats" and r["status"] == "ok"
                   and r.get("answer")), None)
        if st is None:
            return
        def ref_of(wl):
            for tool in ("numpy_ram", "numpy_mmap", "chunkheap"):
                for r in self.rows:
                    if (r["workload"] == wl and r["tool"] == tool and r["status"] == "ok"
                            and r.get("answer") is not None):
                        return r["answer"]
            return None
        s, ms, mm = ref_of("sum"), ref_of("mean_std"), ref_of("minmax")
        if not (s and ms and mm):
            for r in self.rows:
                if r["workload"] == "stats" and r["status"] == "ok":
                    r["check"], r["check_note"] = None, "not cross-checked (needs sum, " \
                                                        "mean_std and minmax in the run)"
            return
        ref = [s[0], ms[0], ms[1], mm[0], mm[1], mm[2]]
        for r in self.rows:
            if r["workload"] == "stats" and r["status"] == "ok":
                r["check"], r["check_note"] = compare("stats", ref, r.get("answer"))
                r["check_note"] = "vs sum/mean_std/minmax refs: " + r["check_note"]


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def finish_rows(rows, bench, limits):
    read_all = limits.get("pread_all")
    for r in rows:
        if r["status"] != "ok":
            continue
        r["gbps"] = bench.input_bytes(r["workload"]) / r["median_s"] / 1e9
        peers = [x["median_s"] for x in rows if x["workload"] == r["workload"]
                 and x["status"] == "ok" and not x["tool"].startswith("chunkheap")]
        r["ratio"] = r["median_s"] / min(peers) if peers else None
        r["frac"] = r["gbps"] / read_all if read_all else None
        if r.get("probes"):
            # Each run against the probe just before it, then the median of those fractions.
            nbytes = bench.input_bytes(r["workload"])
            r["frac_paired"] = statistics.median(
                nbytes / w / 1e9 / p for w, p in zip(r["runs"], r["probes"]))
            r["probe_gbps"] = statistics.median(r["probes"])
        if r["workload"] == "write_expr":
            # Its limit is the write: output bytes (one input's size) against the write probe.
            out_gbps = bench.input_bytes(r["workload"]) / 2 / r["median_s"] / 1e9
            best = limits.get("write_best")
            r["frac"] = out_gbps / best if best else None
            # The page-cache figure is a memory copy while dirty pages fit under the kernel's
            # limits; the O_DIRECT one is the device's own rate: show both.
            direct = limits.get("write_direct")
            if direct and direct < best:
                note = f"{100 * out_gbps / direct:.0f} % of the O_DIRECT write"
                r["notes"] = "; ".join(x for x in (r.get("notes"), note) if x)
        if r["workload"] == "matmul":
            n = bench.ds.mat_n
            flops = 2.0 * n ** 3 / r["median_s"] / 1e9
            r["notes"] = "; ".join(x for x in (r.get("notes"), f"{flops:.1f} GFLOP/s") if x)


def check_cell(r):
    if r["status"] != "ok":
        return ""
    c, note = r.get("check"), r.get("check_note", "")
    if c is True:
        return f"ok ({note})"
    if c is False:
        return f"**MISMATCH**: {note}"
    return note or ""


def markdown(rows, bench, limits, header_lines):
    out = io.StringIO()
    w = out.write
    for line in header_lines:
        w(line + "\n")
    w("\n| workload | tool | median s | GB/s of input | peak RSS MiB | ratio to best peer "
      "| of page-cache read limit (write limit for write_expr); paired | answer | notes |\n")
    w("|---|---|---:|---:|---:|---:|---:|---|---|\n")
    for r in rows:
        if r["status"] != "ok":
            w(f"| {r['workload']} | {r['tool']} | {r['status']} | | | | | | "
              f"{md_escape(r.get('notes', ''))} |\n")
            continue
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else ""
        frac = f"{100 * r['frac']:.0f} %" if r.get("frac") else ""
        if r.get("frac_paired"):
            frac += (f"; {100 * r['frac_paired']:.0f} % of the probe before each run "
                     f"(median {r['probe_gbps']:.1f} GB/s)")
        w(f"| {r['workload']} | {r['tool']} | {r['median_s']:.3f} | {r['gbps']:.2f} | "
          f"{r['rss'] / MiB:.0f} | {ratio} | {frac} | {md_escape(check_cell(r))} | "
          f"{md_escape(r.get('notes', ''))} |\n")
    return out.getvalue()


def md_escape(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def write_csv(path, rows):
    cols = ["workload", "tool", "status", "median_s", "runs_s", "gbps", "peak_rss_mib",
            "ratio_to_best_peer", "frac_of_read_limit", "frac_of_paired_read",
            "paired_read_gbps", "check", "check_note", "notes", "answer",
            "cmd", "inputs_in_small_folios"]
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(cols)
        for r in rows:
            ok = r["status"] == "ok"
            wr.writerow([
                r["workload"], r["tool"], r["status"],
                f"{r['median_s']:.6f}" if ok else "",
                ";".join(f"{x:.6f}" for x in r.get("runs", [])),
                f"{r['gbps']:.4f}" if ok else "",
                f"{r['rss'] / MiB:.1f}" if ok else "",
                f"{r['ratio']:.4f}" if ok and r.get("ratio") else "",
                f"{r['frac']:.4f}" if ok and r.get("frac") else "",
                f"{r['frac_paired']:.4f}" if ok and r.get("frac_paired") else "",
                ";".join(f"{x:.3f}" for x in r.get("probes") or []),
                {True: "ok", False: "MISMATCH", None: ""}[r.get("check")],
                r.get("check_note", ""), r.get("notes", ""), short_answer(r.get("answer")),
                r.get("cmd", ""),
                f"{r['small_folios']:.3f}" if r.get("small_folios") is not None else "",
            ])


def short_answer(a):
    if a is None:
        return ""
    if isinstance(a, dict):
        c = a["counts"]
        return json.dumps({"bins": len(c), "total": sum(c), "first": c[:3], "edges": a["edges"]})
    return json.dumps(a)


def machine_info():
    info = []
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        info.append(f"{model}, {os.cpu_count()} threads")
    except OSError:
        info.append(f"{os.cpu_count()} threads")
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
        info.append(f"{kb / 2**20:.1f} GiB RAM")
    except (OSError, StopIteration):
        pass
    return ", ".join(info)


def harness_rss():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def git_rev():
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                       text=True)
    return r.stdout.strip() if r.returncode == 0 else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=4 * GiB,
                    help="bytes of each 1-D input (default 4GiB)")
    ap.add_argument("--dir", help="data dir (kept; inputs reused). Default: a temp dir, removed")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--no-peers", action="store_true", help="chunkheap alone")
    ap.add_argument("--peers", help="comma-separated subset of: " + ",".join(PEERS))
    ap.add_argument("--memory-limit", default="512MiB",
                    help="budget for the second chunkheap pass; 'none' to skip it")
    ap.add_argument("--out", default=str(HERE / "results"), help="where the md/csv/png go")
    ap.add_argument("--bin", help="use this chunkheap binary instead of building")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    ap.add_argument("--cold", action="store_true",
                    help="also time sum(a) on cold data (a.npy evicted from the page cache)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        return worker(json.loads(args.worker))

    wls = list(WORKLOADS)
    if args.only:
        wls = [w.strip() for w in args.only.split(",") if w.strip()]
        bad = [w for w in wls if w not in WORKLOADS]
        if bad:
            ap.error(f"unknown workload(s) {bad}; choose from {','.join(WORKLOADS)}")
    tools = list(PEERS)
    if args.peers:
        tools = [t.strip() for t in args.peers.split(",") if t.strip()]
        bad = [t for t in tools if t not in PEERS]
        if bad:
            ap.error(f"unknown peer(s) {bad}; choose from {','.join(PEERS)}")
    limit = None if args.memory_limit.lower() in ("none", "off", "0", "") else args.memory_limit
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    cleanup = []

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return bench_main(args, wls, tools, limit, cleanup)
    except KeyboardInterrupt:
        log("\n!! interrupted: stopping the running process and removing temp files")
        kill_current_child()
        return 130
    finally:
        for p in cleanup:
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.exists(p):
                os.unlink(p)


# ---------------------------------------------------------------------------------------------
# Cold data (--cold): the input is evicted from the page cache before every run
# ---------------------------------------------------------------------------------------------

def evict(path):
    """Evicts one file's pages from the page cache (posix_fadvise DONTNEED; no root needed),
    leaving the binaries and libraries of the tools warm."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fresh_cache(paths):
    """Evicts the files (directories: every file in them) from the page cache and reads them
    back, one at a time, so that they are cached the way a file is when first read."""
    for p in paths:
        for fp in files_of([p]):
            evict(fp)
        touch([p])


def cold_read_throughput(path, threads):
    """Sequential read of a cold file in 8 MiB blocks: the disk's rate, the cold-data limit."""
    evict(path)
    return pread_throughput(path, threads, repeats=1)


def cold_section(bench, ds, args, threads):
    """Times sum(a) with a cold page cache for chunkheap and NumPy's memmap; Markdown lines."""
    a = ds.path("a")
    log("== cold data (a.npy evicted from the page cache before every run)")
    limit_1 = max(cold_read_throughput(a, 1) for _ in range(2))
    limit_all = max(cold_read_throughput(a, threads) for _ in range(2))
    log(f"   cold sequential read: {limit_1:.2f} GB/s (1 thread), {limit_all:.2f} GB/s "
        f"({threads} threads)")
    limit = max(limit_1, limit_all)
    size = os.path.getsize(a)
    rows = []
    cmds = [("chunkheap `eval 'sum(a)'`",
             [bench.bin, "--progress", "never", "eval", "sum(a)", f"a={a}"], None)]
    if bench.py:
        spec = {"job": "peer", "tool": "numpy_mmap", "workload": "sum", "files": bench.files()}
        cmds.append(("NumPy memmap `a.sum()`",
                      [bench.py, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                      bench.peer_env))
    runs = max(2, min(args.runs, 3))
    for name, cmd, env in cmds:
        walls = []
        for _ in range(runs):
            evict(a)
            r = run_process(cmd, args.timeout, env=env)
            if r.rc != 0:
                walls = None
                log(f"   {name}: failed: {r.first_err()}")
                break
            walls.append(r.wall)
        if walls:
            t = statistics.median(walls)
            log(f"   {name:<40} {t:8.3f} s  {size / t / 1e9:6.2f} GB/s")
            rows.append(f"| {name} | {t:.3f} | {size / t / 1e9:.2f} | "
                        f"{100 * size / t / 1e9 / limit:.0f} % |")
    return ["", "## Cold data", "",
            f"`sum(a)` over {size / GiB:.1f} GiB with a.npy evicted from the page cache "
            "(`posix_fadvise(DONTNEED)`) before each run "
            f"(median of {runs}). Cold-data limit measured in the same run: "
            f"sequential reads in 8 MiB blocks straight after an eviction, {limit_1:.2f} GB/s with 1 "
            f"thread, {limit_all:.2f} GB/s with {threads}.", "",
            "| tool | median s | GB/s | of the cold read limit |", "|---|---:|---:|---:|"] + rows


def bench_main(args, wls, tools, limit, cleanup):
    t_all = time.perf_counter()
    binary = args.bin or build_chunkheap()
    binary = str(Path(binary).resolve())
    py = None if args.no_peers else ensure_venv()

    if args.dir:
        d = Path(args.dir).resolve()
        d.mkdir(parents=True, exist_ok=True)
    else:
        d = Path(tempfile.mkdtemp(prefix="chunkheap-bench-"))
        cleanup.append(str(d))
    needed = []
    for wl in wls:
        for k in WORKLOADS[wl][0]:
            if k not in needed:
                needed.append(k)
    if py and "dask_zarr" in tools and any(wl in PEERS["dask_zarr"] for wl in wls):
        for wl in wls:
            if wl in PEERS["dask_zarr"]:
                for k in WORKLOADS[wl][0]:
                    if k + "_zarr" not in needed:
                        needed.append(k + "_zarr")
    ds = Datasets(d, args.size, binary, needed)
    log(f"== datasets in {d} (N = {ds.n} f64 per 1-D input, sort {ds.ns}, "
        f"matmul n = {ds.mat_n})")
    ds.make()
    # Every input enters the page cache the way a file on disk does when it is first read (large
    # read-ahead folios), not in whatever shape the generator's writes left it: mapped readers
    # (chunkheap, NumPy's memmap) take one page fault per folio, so a freshly written file can
    # cost them several times the faults of the same file read back.
    log("== page cache: each input evicted and read back once")
    fresh_cache([ds.path(k) for k in needed])

    bench = Bench(args, binary, py, ds, cleanup)

    # machine limits
    log("== machine limits (a.npy read once first, so reads come from the page cache)")
    limits = {}
    threads = os.cpu_count() or 1
    probe = ds.path(needed[0])
    touch([probe])
    limits["pread_1"] = pread_throughput(probe, 1)
    limits["pread_all"] = pread_throughput(probe, threads)
    # in a subprocess, so the harness itself stays small (see GNU_TIME)
    r = run_process([sys.executable, str(Path(__file__).resolve()), "--worker",
                     json.dumps({"job": "memcpy", "nbytes": min(GiB, max(64 * MiB, args.size))})],
                    args.timeout)
    limits["memcpy_1"] = json.loads(r.stdout.strip().splitlines()[-1])["memcpy_1"]
    # As many bytes as the write workload's output: a smaller probe fits under the kernel's dirty
    # page limits and measures a copy into the page cache that no multi-GiB output can reach.
    wbytes = max(64 * MiB, args.size)
    limits["write"], limits["write_direct"], limits["write_fsync"] = write_throughput(str(d), wbytes)
    # The machine's write limit: the faster way to put bytes in a new file.
    limits["write_best"] = max(limits["write"], limits["write_direct"] or 0.0)
    if py:
        r = run_process([py, str(Path(__file__).resolve()), "--worker",
                         json.dumps({"job": "membw", "nbytes": min(GiB, max(64 * MiB, args.size)),
                                     "threads": threads})], args.timeout, env=bench.peer_env)
        if r.rc == 0:
            limits.update({"np_" + k: v for k, v in
                           json.loads(r.stdout.strip().splitlines()[-1]).items()})
    log("   " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in limits.items()))

    for wl in wls:
        bench.run_workload(wl, tools, limit)
    bench.cross_check_stats()
    cold_md = cold_section(bench, ds, args, threads) if args.cold and "a" in needed else []

    # table order: per workload, chunkheap, chunkheap under the limit, then the peers
    order = {t: i for i, t in enumerate(["chunkheap"] + list(PEERS))}
    rows = sorted(bench.rows, key=lambda r: (wls.index(r["workload"]),
                                             order.get(r["tool"], 0.5)))
    finish_rows(rows, bench, limits)
    size_tag = size_label(args.size)
    vers = ""
    if py:
        r = subprocess.run([py, "-c", "import numpy, numexpr, dask, zarr, pyarrow; print("
                            "f'NumPy {numpy.__version__}, numexpr {numexpr.__version__}, "
                            "Dask {dask.__version__}, zarr {zarr.__version__}, "
                            "pyarrow {pyarrow.__version__}')"], capture_output=True, text=True)
        vers = r.stdout.strip()
    ch_ver = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    header = [
        f"## Large-dataset benchmark, {size_tag} per input ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"`python3 benches/harness.py {' '.join(sys.argv[1:])}`",
        "",
        f"- Machine: {machine_info()}; Python {sys.version.split()[0]}; "
        f"{ch_ver} (git {git_rev()}); {vers or 'no peers'}.",
        f"- Inputs: a, b: {ds.n} f64 ({ds.nbytes('a') / MiB:.0f} MiB each, normal, seeds 1, 2); "
        f"m: {ds.shapes['m'][0]}x1024; s: {ds.ns} f64 ({ds.nbytes('s') / MiB:.0f} MiB); "
        f"x, y: {ds.mat_n}x{ds.mat_n} f64. Zarr copies for Dask: {ds.zchunk}-element chunks.",
        f"- Machine limits (same run): page-cache read of {os.path.basename(probe)} "
        f"{limits['pread_1']:.2f} GB/s (1 thread), {limits['pread_all']:.2f} GB/s "
        f"({threads} threads); memcpy {limits['memcpy_1']:.2f} GB/s (1 thread)"
        + (f"; NumPy copy {limits['np_copy_1']:.2f} / {limits['np_copy_all']:.2f} GB/s and "
           f"in-RAM sum {limits['np_sum_1']:.2f} / {limits['np_sum_all']:.2f} GB/s (1 / "
           f"{threads} threads)" if "np_copy_1" in limits else "")
        + f"; write of {wbytes / MiB:.0f} MiB to a new file {limits['write']:.2f} GB/s through the "
        f"page cache (best of 3, no fsync), "
        + (f"{limits['write_direct']:.2f} GB/s with O_DIRECT (best of 3), "
           if limits["write_direct"] else "O_DIRECT refused by the file system, ")
        + f"{limits['write_fsync']:.2f} GB/s with fsync. The write workload's fraction is of the "
        f"faster of the first two.",
        "- Warm cache: every input was evicted from the page cache and read back once after "
        "generation (so its pages are cached as a file read from disk), and each tool's inputs "
        "were read once just before its runs of a workload (first evicted and read back when 10 % "
        "or more of their 2 MiB regions were cached in small folios; the CSV's "
        "`inputs_in_small_folios` is the share each tool ran on). "
        f"Median of {args.runs} run(s); every run is a whole process (Python start-up and "
        "imports included for the peers; the in-process time is in the notes). Peak RSS is the "
        + ("process's own peak (GNU time %M)" if GNU_TIME else
           "process's ru_maxrss from wait4 (no /usr/bin/time: it has the harness's own peak, "
           f"{harness_rss() / MiB:.0f} MiB, as a floor)")
        + " and counts mapped page-cache pages. GB/s = input bytes / median "
        "time. Ratio = time / the best peer's time for that workload (below 1: faster than "
        f"every peer). The read-limit fraction uses the {threads}-thread page-cache figure; "
        "for the read-bound workloads, each chunkheap run is also paired with the same read "
        "probe (one pass) just before it, and \"paired\" is the median over runs of each run's "
        "GB/s over its probe's (the CSV's `paired_read_gbps` lists the probes).",
        "- chunkheap uses all cores; NumPy and pyarrow reductions one thread (BLAS threads for "
        "matmul); numexpr and Dask their default thread pools.",
    ]
    if bench.openblas_note:
        header.append(f"- {bench.openblas_note}.")
    if not py:
        header.append("- **No peers** (" + ("--no-peers" if args.no_peers else
                                            "the venv could not be set up") +
                      "): answers unchecked, no ratios.")
    md = markdown(rows, bench, limits, header)
    used = ", ".join(f"`{r['tool']}` {r['workload']}: `{r['cmd']}`" for r in rows
                     if r.get("cmd") and r["tool"] == "chunkheap")
    if used:
        md += f"\nchunkheap command lines: {used}\n"
    if cold_md:
        md += "\n".join(cold_md) + "\n"
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    stem = outdir / f"harness-{size_tag}"
    Path(str(stem) + ".md").write_text(md)
    write_csv(str(stem) + ".csv", rows)
    chart_py = py
    if chart_py is None:
        r = subprocess.run([sys.executable, "-c", "import matplotlib"], capture_output=True)
        chart_py = sys.executable if r.returncode == 0 else None
    if chart_py:
        crow = [{"workload": r["workload"], "tool": r["tool"], "median_s": r["median_s"]}
                for r in rows if r["status"] == "ok"]
        spec = {"job": "chart", "rows": crow, "png": str(stem) + ".png",
                "title": f"chunkheap vs peers, {size_tag} per input, median wall s "
                         "(lower is better)"}
        r = run_process([chart_py, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                        300)
        if r.rc != 0:
            log(f"!! chart failed: {r.first_err()}")
    else:
        log("!! no matplotlib: no chart")
    print(md)
    log(f"== wrote {stem}.md, .csv" + (", .png" if chart_py else "") +
        f" in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
