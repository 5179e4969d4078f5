#!/usr/bin/env python3
"""Reference test fixtures for chunkheap.

Rerun (from the repository root; paths are resolved relative to this file):

    /path/to/python data/make_fixtures.py

    e.g.  /opt/pyref/bin/python data/make_fixtures.py

Generated with (also recorded in answers.json -> "generator"):
    Python 3.11.7, numpy 2.4.6, zarr 3.1.6, numcodecs 0.16.6, pyarrow 26.0.1

The script is deterministic (one seeded numpy Generator, SEED below); rerunning
it with the same package versions reproduces the same bytes.  It deletes and
rewrites data/npy, data/zarr, data/arrow, data/bad and data/answers.json.

Outputs
  npy/    .npy files (every dtype, NaN/inf, big-endian, Fortran order, header
          versions 1/2/3, 0-d, empty, 8-D, huge integer sums, duplicates,
          signed zeros, an unaligned data offset)
  zarr/   Zarr v3 directory stores written by zarr-python 3
  arrow/  Arrow IPC files / Feather v2 (pyarrow)
  bad/    inputs that must be rejected
  answers.json  expected statistics, see README.md for the semantics.

Answer semantics (NumPy NaN-skipping functions on np.asarray(a), C order):
  count = #non-NaN, nan_count, sum = np.nansum (exact Python int for ints/bool),
  mean = np.nanmean in float64 (ints: exact_sum / count), std = np.nanstd of the
  float64 view (ddof=0), var_ddof1 = np.nanvar(ddof=1), min/max = nanmin/nanmax,
  argmin/argmax = nanargmin/nanargmax (flat C-order index, first occurrence).
  Empty: count 0, sum 0, others null.  All-NaN: count 0, sum 0.0, others null.
  f32 fixtures additionally carry "sum_f64" (NaN-skipping sum accumulated in
  float64), because np.nansum of a float32 array accumulates in float32.

At the end the script re-reads answers.json and every fixture from disk and
checks the answers against independently kept "intended" arrays; it also
checks that the bad inputs are what they claim to be.
"""

import json
import math
import os
import shutil
import struct
import sys
import warnings

import numcodecs
import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import zarr

SEED = 20240607
HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(SEED)

FLOATS = {"f32", "f64"}
NP2OUR = {
    "b": "bool", "i1": "i8", "i2": "i16", "i4": "i32", "i8": "i64",
    "u1": "u8", "u2": "u16", "u4": "u32", "u8": "u64", "f4": "f32", "f8": "f64",
}


def our_dtype(dt):
    dt = np.dtype(dt)
    key = "b" if dt.kind == "b" else f"{dt.kind}{dt.itemsize}"
    return NP2OUR[key]


def p(rel):
    return os.path.join(HERE, rel)


# --------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------
def stats(a):
    """Answers for array `a` (anything np.asarray accepts)."""
    a = np.asarray(a, order="C")   # (np.ascontiguousarray would turn 0-d into shape (1,))
    dt = our_dtype(a.dtype)
    n = int(a.size)
    out = {"shape": list(a.shape), "dtype": dt}
    none = dict(mean=None, std=None, var_ddof1=None, min=None, max=None,
                argmin=None, argmax=None)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if dt in FLOATS:
            nan_count = int(np.isnan(a).sum())
            count = n - nan_count
            out.update(count=count, nan_count=nan_count)
            if count == 0:
                out.update(sum=0.0, **none)
            else:
                a64 = a.astype(np.float64)
                out.update(
                    sum=float(np.nansum(a)),
                    mean=float(np.nanmean(a64)),
                    std=float(np.nanstd(a64)),
                    var_ddof1=float(np.nanvar(a64, ddof=1)),
                    min=float(np.nanmin(a)),
                    max=float(np.nanmax(a)),
                    argmin=int(np.nanargmin(a)),
                    argmax=int(np.nanargmax(a)),
                )
            if dt == "f32":
                out["sum_f64"] = float(np.nansum(a.astype(np.float64))) if count else 0.0
        else:
            out.update(count=n, nan_count=0)
            if n == 0:
                out.update(sum=0, **none)
            else:
                exact = sum(int(x) for x in a.ravel().tolist())
                a64 = a.astype(np.float64)
                conv = bool if dt == "bool" else int
                out.update(
                    sum=exact,
                    mean=exact / n,
                    std=float(np.nanstd(a64)),
                    var_ddof1=float(np.nanvar(a64, ddof=1)),
                    min=conv(a.min()),
                    max=conv(a.max()),
                    argmin=int(np.argmin(a)),
                    argmax=int(np.argmax(a)),
                )
    return out


def same(x, y):
    """Exact equality incl. NaN == NaN, sign of zero, int vs bool types."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        if x != x:
            return y != y
        return x == y and np.signbit(x) == np.signbit(y)
    return x == y


FIXTURES = []   # dicts: source, kind, notes, + intended array (kept for checks)
BAD = []


def add(source, kind, notes, intended):
    FIXTURES.append({"source": source, "kind": kind, "notes": notes,
                     "_intended": np.asarray(intended)})


def bad(source, expect, why):
    BAD.append({"source": source, "expect": expect, "why": why})


# --------------------------------------------------------------------------
# npy
# --------------------------------------------------------------------------
def save_npy(name, a, notes, intended=None):
    np.save(p(f"npy/{name}"), a, allow_pickle=False)
    add(f"npy/{name}", "npy", notes, a if intended is None else intended)


def rand_int(dt, n=1000):
    info = np.iinfo(dt)
    a = rng.integers(info.min, info.max, size=n, endpoint=True, dtype=dt)
    # put the dtype's extremes somewhere in the middle
    a[n // 3] = info.min
    a[(2 * n) // 3] = info.max
    return a


def sprinkle_nan(a, frac=0.05):
    a = a.copy()
    idx = rng.choice(a.size, size=max(1, int(a.size * frac)), replace=False)
    a.flat[idx] = np.nan
    return a


def make_npy():
    os.makedirs(p("npy"))
    b = rng.random(1000) < 0.3
    save_npy("bool.npy", b, "1-D bool, ~30% True; sum = number of Trues")
    for dt in ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"]:
        a = rand_int(np.dtype("<" + dt))
        save_npy(f"{our_dtype(dt)}.npy", a,
                 f"1-D 1000 random <{dt} over the full range; contains the dtype min at "
                 f"index 333 and max at 666 (first occurrence may be earlier for small types)")
    f64 = rng.standard_normal(1000) * 100.0 + 5.0
    save_npy("f64.npy", f64, "1-D 1000 f64 normal(5, 100), no NaN")
    save_npy("f64_nan.npy", sprinkle_nan(f64), "f64.npy with 50 NaNs sprinkled")
    f32 = (rng.standard_normal(1000) * 10.0).astype("<f4")
    save_npy("f32.npy", f32, "1-D 1000 f32, no NaN; sum = np.nansum in float32, sum_f64 = f64 accumulation")
    save_npy("f32_nan.npy", sprinkle_nan(f32), "f32.npy with 50 NaNs sprinkled")
    save_npy("f64_allnan.npy", np.full(64, np.nan), "64 NaNs: count 0, sum 0.0, rest null")
    inf = rng.standard_normal(200)
    inf[[3, 50]] = np.inf
    inf[[10, 120]] = -np.inf
    inf[77] = np.nan
    save_npy("f64_inf.npy", inf, "+inf at 3,50, -inf at 10,120, NaN at 77: sum/mean NaN (inf-inf), std NaN, min -inf (argmin 10), max +inf (argmax 3)")
    pinf = rng.standard_normal(100)
    pinf[[20, 21]] = np.inf
    save_npy("f64_posinf.npy", pinf, "+inf at 20,21 only: sum/mean +inf, std NaN, argmax 20")

    # big-endian
    save_npy("be_f64.npy", f64.astype(">f8"), "big-endian '>f8' copy of f64.npy")
    save_npy("be_i32.npy", rand_int(np.dtype("<i4")).astype(">i4"), "big-endian '>i4', full range incl. min/max")
    save_npy("be_u16.npy", rand_int(np.dtype("<u2")).astype(">u2"), "big-endian '>u2', full range incl. 0/65535")
    save_npy("be_f32.npy", sprinkle_nan(f32).astype(">f4"), "big-endian '>f4' with 50 NaNs")

    # Fortran order
    fa = np.asfortranarray(rng.standard_normal((37, 23)))
    save_npy("fortran_f64_37x23.npy", fa, "fortran_order True 2-D; argmin/argmax are C-order flat indices")
    fi = np.asfortranarray(rng.integers(-10**6, 10**6, size=(37, 23), dtype="<i4"))
    save_npy("fortran_i32_37x23.npy", fi, "fortran_order True 2-D i32")
    f3 = np.asfortranarray(sprinkle_nan(rng.standard_normal((5, 6, 7)), 0.03))
    save_npy("fortran_f64_5x6x7.npy", f3, "fortran_order True 3-D f64 with NaNs; C-order argmin/argmax")
    fbe = np.asfortranarray(rng.standard_normal((37, 23)).astype(">f8"))
    assert fbe.flags.f_contiguous and not fbe.flags.c_contiguous
    save_npy("fortran_be_f64_37x23.npy", fbe, "big-endian '>f8' AND fortran_order True 2-D")

    # header versions 2.0 / 3.0
    for ver in [(2, 0), (3, 0)]:
        a = rng.standard_normal(500)
        name = f"v{ver[0]}_f64.npy"
        with open(p(f"npy/{name}"), "wb") as fh:
            np.lib.format.write_array(fh, a, version=ver)
        add(f"npy/{name}", "npy", f".npy format version {ver[0]}.0 (4-byte header length)", a)

    # 0-d
    save_npy("scalar_f64.npy", np.float64(3.5), "0-d f64 3.5 (shape []); var_ddof1 NaN (count 1)", np.asarray(3.5))
    save_npy("scalar_i64.npy", np.int64(-7), "0-d i64 -7 (shape []); var_ddof1 NaN (count 1)", np.asarray(np.int64(-7)))

    # empty
    save_npy("empty_f64_0.npy", np.zeros((0,)), "shape (0,) f64: count 0, sum 0, rest null")
    save_npy("empty_f64_3x0.npy", np.zeros((3, 0)), "shape (3,0) f64: count 0, sum 0, rest null")
    save_npy("empty_i32_0x4x5.npy", np.zeros((0, 4, 5), dtype="<i4"), "shape (0,4,5) i32: count 0, sum 0 (int), rest null")

    # 8-D
    a8 = rng.standard_normal((2, 1, 3, 1, 2, 2, 1, 2))
    save_npy("f64_8d.npy", a8, "8-D f64 shape 2x1x3x1x2x2x1x2 (48 elements)")

    # huge integer sums
    big = rng.integers(2**62 - 2**40, 2**62, size=1000, dtype="<i8")
    save_npy("i64_bigsum.npy", big, "i64 values near 2^62; exact sum ~1000*2^62 >> 2^63 (JSON integer)")
    ubig = rng.integers(2**64 - 2**40, 2**64 - 1, size=1000, dtype="<u8", endpoint=True)
    save_npy("u64_bigsum.npy", ubig, "u64 values near 2^64; exact sum ~1000*2^64 >> 2^64 (JSON integer)")

    # duplicates -> first occurrence
    di = rng.integers(-5, 6, size=500, dtype="<i4")
    save_npy("i32_dups.npy", di, "values in [-5,5]: min/max occur many times, argmin/argmax = first occurrence")
    df = np.round(rng.uniform(-2, 2, size=300), 0)
    df[0] = np.nan
    df[[7, 100, 200]] = -9.0
    df[[9, 150]] = 9.0
    df[[8, 151]] = np.nan
    save_npy("f64_dups.npy", df, "NaN at index 0; -9.0 at 7,100,200 (argmin 7); 9.0 at 9,150 (argmax 9)")

    # signed zero
    z = np.array([0.0, -0.0, 3.0, -0.0, 0.0, 1.0, -0.0, 2.0, 0.0, 3.0])
    save_npy("f64_negzero.npy", z,
             "zeros of both signs are the minimum: -0.0 == 0.0 so argmin 0, argmax 2; "
             "min is a zero (compare with ==, sign is NumPy implementation detail)")

    # unaligned data offset: total header length 64*2+3 = 131
    ua = rng.standard_normal(100)
    d = "{'descr': '<f8', 'fortran_order': False, 'shape': (100,), }"
    total = 64 * 2 + 3
    hlen = total - 10
    hdr = d + " " * (hlen - len(d) - 1) + "\n"
    assert len(hdr) == hlen
    with open(p("npy/unaligned_f64.npy"), "wb") as fh:
        fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + hdr.encode("latin1"))
        fh.write(ua.astype("<f8").tobytes())
    add("npy/unaligned_f64.npy", "npy",
        f"hand-written v1.0 header; data starts at byte offset {total} (not a multiple of 8 or 16)", ua)

    # A large mean with a small spread, over several 4096-value blocks: the mean's rounding
    # (an ulp of 1e9 is 1.2e-7) must not leak into std. Its own generator, so the fixtures
    # above keep their bytes.
    off = 1e9 + np.random.default_rng(SEED + 1).standard_normal(20000) * 0.01
    save_npy("f64_offset.npy", off, "1e9 + N(0, 0.01), 20000 values: std must keep ~1e-11 relative")


# --------------------------------------------------------------------------
# zarr
# --------------------------------------------------------------------------
def zpath(name):
    return p(f"zarr/{name}")


def make_zarr():
    os.makedirs(p("zarr"))

    def mk(name, data, notes, intended=None, **kw):
        arr = zarr.create_array(store=zpath(name), zarr_format=3, **kw)
        if data is not None:
            arr[...] = data
        add(f"zarr/{name}", "zarr", notes, data if intended is None else intended)
        return arr

    a = rng.standard_normal((40, 30))
    mk("f64_zstd_40x30.zarr", a, "default codecs (bytes little + zstd), chunks 16x16 -> edge chunks 8 rows / 14 cols",
       shape=a.shape, chunks=(16, 16), dtype="float64", fill_value=0.0)

    a = rng.integers(-1000, 1000, size=(7, 9, 5), dtype="int32")
    mk("i32_raw_7x9x5.zarr", a, "compressors=None (raw little-endian bytes), chunks 4x4x3 -> edge chunks in every dim",
       shape=a.shape, chunks=(4, 4, 3), dtype="int32", fill_value=0, compressors=None)

    a = rng.integers(-(2**40), 2**40, size=(25, 20), dtype="int64")
    mk("i64_gzip_25x20.zarr", a, "gzip compressor (level 5), chunks 10x10, edge chunks in dim 0; "
       "gzip header MTIME zeroed after writing (for reproducible bytes)",
       shape=a.shape, chunks=(10, 10), dtype="int64", fill_value=0, compressors=zarr.codecs.GzipCodec())
    # numcodecs' gzip stores the current time in the gzip header (bytes 4..7, MTIME);
    # zero it so reruns are byte-identical.  No FHCRC flag -> no header checksum to fix.
    for dp, _, fns in os.walk(zpath("i64_gzip_25x20.zarr/c")):
        for fn in fns:
            with open(os.path.join(dp, fn), "r+b") as fh:
                head = fh.read(4)
                assert head[:3] == b"\x1f\x8b\x08" and not head[3] & 0x02, head
                fh.write(b"\0\0\0\0")

    a = sprinkle_nan(rng.standard_normal((13, 11)), 0.05)
    mk("f64_bigendian_13x11.zarr", a, "bytes codec endian=big, no compressor, chunks 5x5, a few NaNs",
       shape=a.shape, chunks=(5, 5), dtype="float64", fill_value=0.0,
       serializer=zarr.codecs.BytesCodec(endian="big"), compressors=None)

    a = rng.integers(0, 65536, size=(20, 20), dtype="uint16")
    mk("u16_v2keys_20x20.zarr", a, "chunk_key_encoding v2 with '.' separator: chunk files named '0.1' at top level",
       shape=a.shape, chunks=(8, 8), dtype="uint16", fill_value=0,
       chunk_key_encoding={"name": "v2", "separator": "."})

    a = rng.integers(-128, 128, size=(30, 10), dtype="int8")
    mk("i8_dotkeys_30x10.zarr", a, "default chunk_key_encoding with separator '.': chunk files named 'c.0.1'",
       shape=a.shape, chunks=(7, 4), dtype="int8", fill_value=0,
       chunk_key_encoding={"name": "default", "separator": "."})

    # missing chunks, f64 fill NaN
    shape = (40, 40)
    arr = zarr.create_array(store=zpath("f64_missing_nanfill_40x40.zarr"), zarr_format=3, shape=shape,
                            chunks=(10, 10), dtype="float64", fill_value=np.nan)
    intended = np.full(shape, np.nan)
    blk = rng.standard_normal((15, 20))
    arr[5:20, 0:20] = blk                      # touches chunks (0,0),(0,1),(1,0),(1,1)
    intended[5:20, 0:20] = blk
    arr[30:40, 30:40] = np.nan                 # whole chunk == fill -> not stored
    last = rng.standard_normal((3, 10))
    arr[37:40, 0:10] = last                    # chunk (3,0)
    intended[37:40, 0:10] = last
    add("zarr/f64_missing_nanfill_40x40.zarr", "zarr",
        "fill_value NaN; only chunks c/0/0 c/0/1 c/1/0 c/1/1 c/3/0 exist; chunk (3,3) was written as all-NaN "
        "and zarr-python did NOT store it (write_empty_chunks=False); missing chunks read as NaN (count/nan_count)",
        intended)

    # missing chunks, i16 fill 7
    shape = (30, 30)
    arr = zarr.create_array(store=zpath("i16_missing_fill7_30x30.zarr"), zarr_format=3, shape=shape,
                            chunks=(10, 10), dtype="int16", fill_value=7)
    intended = np.full(shape, 7, dtype="int16")
    blk = rng.integers(-32768, 32768, size=(10, 25), dtype="int16")
    arr[10:20, 0:25] = blk
    intended[10:20, 0:25] = blk
    arr[0:10, 20:30] = 7                       # equals fill -> not stored
    add("zarr/i16_missing_fill7_30x30.zarr", "zarr",
        "fill_value 7; only chunks c/1/0 c/1/1 c/1/2 exist (c/1/2 partially written: rest of it is fill 7); "
        "chunk (0,2) was written as all-7 and not stored; all missing chunks read as 7",
        intended)

    a = rng.random(100) < 0.4
    mk("bool_100.zarr", a, "bool, chunks 32 (edge chunk of 4), fill_value False; sum = #True",
       shape=a.shape, chunks=(32,), dtype="bool", fill_value=False)

    mk("f64_scalar.zarr", np.asarray(2.25), "0-d f64 zarr (shape [], chunk_shape []), value 2.25; var_ddof1 NaN",
       shape=(), chunks=(), dtype="float64", fill_value=0.0)

    mk("f32_empty_0x5.zarr", None, "shape (0,5) f32, no chunks stored: count 0, sum 0, rest null",
       intended=np.zeros((0, 5), dtype="float32"),
       shape=(0, 5), chunks=(4, 5), dtype="float32", fill_value=0.0)

    a = rng.integers(2**64 - 2**50, 2**64 - 1, size=(300,), dtype="uint64", endpoint=True)
    a[10] = 0
    a[200] = 2**64 - 1
    mk("u64_100x3.zarr", a.reshape(100, 3), "uint64 near 2^64 (plus a 0 and 2^64-1), chunks 32x3; exact sum > 2^64",
       shape=(100, 3), chunks=(32, 3), dtype="uint64", fill_value=0)


# --------------------------------------------------------------------------
# arrow
# --------------------------------------------------------------------------
def arrow_col_array(path, col):
    """What our reader sees: concatenated column, float nulls -> NaN."""
    with pa.memory_map(path) as src:
        t = pa.ipc.open_file(src).read_all()
    c = t.column(col).combine_chunks()
    if pa.types.is_floating(c.type):
        c = c.fill_null(np.nan)
    return c.to_numpy(zero_copy_only=False)


def make_arrow():
    os.makedirs(p("arrow"))
    schema = pa.schema([("x", pa.float64()), ("i", pa.int32()), ("b", pa.bool_()),
                        ("u", pa.uint16()), ("name", pa.string())])
    lens = [100, 0, 257, 1000]
    cols = {k: [] for k in ["x", "i", "b", "u"]}
    batches = []
    k0 = 0
    for n in lens:
        x = rng.standard_normal(n) * 3.0
        if n:
            x[rng.choice(n, size=max(1, n // 50), replace=False)] = np.nan
        i = rng.integers(-(2**31), 2**31, size=n, dtype="int32")
        b = rng.random(n) < 0.5
        u = rng.integers(0, 65536, size=n, dtype="uint16")
        if n == 257:
            i[5], i[6] = -(2**31), 2**31 - 1
            u[7], u[8] = 0, 65535
        names = [f"row{k0 + j}" for j in range(n)]
        k0 += n
        for key, v in zip("xibu", (x, i, b, u)):
            cols[key].append(v)
        batches.append(pa.record_batch([pa.array(x), pa.array(i), pa.array(b), pa.array(u),
                                        pa.array(names, pa.string())], schema=schema))
    with pa.OSFile(p("arrow/multi.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        for rb in batches:
            w.write_batch(rb)
    for key, note in [("x", "float64 with NaNs (no nulls)"), ("i", "int32 incl. INT32_MIN/MAX"),
                      ("b", "bool (bit-packed in Arrow); sum = #True"), ("u", "uint16 incl. 0/65535")]:
        add(f"arrow/multi.arrow#{key}", "arrow",
            f"IPC file, 4 record batches of lengths {lens} (one empty); column {note}",
            np.concatenate(cols[key]))

    # feather v2, lz4 (default), single f32 column
    f = (np.round(rng.standard_normal(600) * 4, 2)).astype("float32")
    f[[0, 99, 598]] = np.nan
    feather.write_feather(pa.table({"f": f}), p("arrow/f32.feather"))
    for src in ["arrow/f32.feather#f", "arrow/f32.feather"]:
        add(src, "arrow", "Feather v2 = Arrow IPC file, default lz4_frame buffer compression, one f32 column 'f' "
            "(NaN at 0,99,598); sum = float32 nansum, sum_f64 = f64 accumulation", f)

    # zstd IPC, single i64 column, 2 batches
    v = rng.integers(-1000, 1000, size=500, dtype="int64")
    v[42], v[43] = -(2**63), 2**63 - 1
    sch = pa.schema([("v", pa.int64())])
    opts = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.OSFile(p("arrow/i64_zstd.arrow"), "wb") as sink, pa.ipc.new_file(sink, sch, options=opts) as w:
        w.write_batch(pa.record_batch([pa.array(v[:300])], schema=sch))
        w.write_batch(pa.record_batch([pa.array(v[300:])], schema=sch))
    for src in ["arrow/i64_zstd.arrow#v", "arrow/i64_zstd.arrow"]:
        add(src, "arrow", "IPC file with zstd buffer compression, batches 300+200, one i64 column 'v' incl. INT64_MIN/MAX", v)

    # float64 with nulls
    vals = rng.standard_normal(120)
    nulls = np.zeros(120, dtype=bool)
    nulls[rng.choice(120, size=12, replace=False)] = True
    nulls[1] = True
    nulls[3] = False
    vals[3] = np.nan                     # a real NaN as well
    pylist = [None if nulls[j] else float(vals[j]) for j in range(120)]
    sch = pa.schema([("v", pa.float64())])
    with pa.OSFile(p("arrow/f64_nulls.arrow"), "wb") as sink, pa.ipc.new_file(sink, sch) as w:
        w.write_batch(pa.record_batch([pa.array(pylist[:50], pa.float64())], schema=sch))
        w.write_batch(pa.record_batch([pa.array(pylist[50:], pa.float64())], schema=sch))
    intended = np.where(nulls, np.nan, vals)
    for src in ["arrow/f64_nulls.arrow#v", "arrow/f64_nulls.arrow"]:
        add(src, "arrow", f"float64 column with {int(nulls.sum())} nulls (validity bitmap, 2 batches 50+70) plus one real NaN "
            "at index 3; nulls are treated as NaN (answers computed with nulls -> NaN, nan_count includes them)",
            intended)


# --------------------------------------------------------------------------
# bad
# --------------------------------------------------------------------------
def npy_bytes(a):
    import io
    bio = io.BytesIO()
    np.save(bio, a)
    return bio.getvalue()


def make_bad():
    os.makedirs(p("bad"))
    good = npy_bytes(np.arange(100, dtype="<f8"))
    with open(p("bad/truncated.npy"), "wb") as fh:
        fh.write(good[:-100])      # header says 100 f8 = 800 bytes; only 700 present
    bad("bad/truncated.npy", "truncated", "header shape (100,) f8 needs 800 data bytes, file has 700")

    with open(p("bad/bad_magic.npy"), "wb") as fh:
        fh.write(b"\x93NUMPX" + good[6:])
    bad("bad/bad_magic.npy", "magic", "first 6 bytes are \\x93NUMPX instead of \\x93NUMPY")

    with open(p("bad/complex128.npy"), "wb") as fh:
        fh.write(npy_bytes(np.arange(10) * (1 + 1j)))
    bad("bad/complex128.npy", "dtype", "valid .npy with descr '<c16' (complex) - unsupported dtype")

    with open(p("bad/unicode_U4.npy"), "wb") as fh:
        fh.write(npy_bytes(np.array(["ab", "cdef", "g"], dtype="<U4")))
    bad("bad/unicode_U4.npy", "dtype", "valid .npy with descr '<U4' (strings) - unsupported dtype")

    d = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,"
    hlen = 128 - 10
    hdr = d + " " * (hlen - len(d) - 1) + "\n"
    with open(p("bad/bad_header.npy"), "wb") as fh:
        fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + hdr.encode("latin1"))
        fh.write(np.arange(3, dtype="<f8").tobytes())
    bad("bad/bad_header.npy", "header", "header dict is unterminated: \"'shape': (3,\" then padding")

    # zarr: blosc codec (valid zarr, but a codec we do not implement)
    a = np.arange(50, dtype="float64")
    z = zarr.create_array(store=p("bad/blosc.zarr"), zarr_format=3, shape=a.shape, chunks=(25,),
                          dtype="float64", fill_value=0.0, compressors=zarr.codecs.BloscCodec())
    z[...] = a
    bad("bad/blosc.zarr", "codec", "valid Zarr v3 store using the 'blosc' compressor codec (zarr-python reads it); "
        "unsupported by chunkheap")

    # zarr: truncated raw chunk
    a = np.arange(40, dtype="int32").reshape(4, 10)
    z = zarr.create_array(store=p("bad/short_chunk.zarr"), zarr_format=3, shape=a.shape, chunks=(4, 5),
                          dtype="int32", fill_value=0, compressors=None)
    z[...] = a
    cp = p("bad/short_chunk.zarr/c/0/1")
    with open(cp, "rb") as fh:
        raw = fh.read()
    assert len(raw) == 80
    with open(cp, "wb") as fh:
        fh.write(raw[:50])
    bad("bad/short_chunk.zarr", "short", "no compressor; chunk c/0/1 should be 4*5*4 = 80 bytes but holds 50 "
        "(expected 80, found 50)")

    # zarr: zarr.json without shape
    z = zarr.create_array(store=p("bad/no_shape.zarr"), zarr_format=3, shape=(10,), chunks=(5,),
                          dtype="float64", fill_value=0.0)
    z[...] = np.arange(10.0)
    mp = p("bad/no_shape.zarr/zarr.json")
    with open(mp) as fh:
        meta = json.load(fh)
    del meta["shape"]
    with open(mp, "w") as fh:
        json.dump(meta, fh, indent=2)
    bad("bad/no_shape.zarr", "shape", "zarr.json has no 'shape' key")

    # zarr: complex128 data_type (valid in zarr-python, unsupported by us)
    z = zarr.create_array(store=p("bad/complex128.zarr"), zarr_format=3, shape=(6,), chunks=(6,),
                          dtype="complex128", fill_value=0)
    z[...] = np.arange(6) * (1 - 1j)
    bad("bad/complex128.zarr", "complex128", "zarr.json data_type 'complex128' (valid Zarr, unsupported dtype)")

    # arrow: truncated in the middle
    with open(p("arrow/multi.arrow"), "rb") as fh:
        raw = fh.read()
    with open(p("bad/truncated.arrow"), "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    bad("bad/truncated.arrow", "truncated",
        f"arrow/multi.arrow cut to {len(raw) // 2} of {len(raw)} bytes: no footer / trailing ARROW1 magic "
        "(arrow-rs would say something like 'does not contain correct footer')")
    bad("arrow/multi.arrow#nope", "nope", "column 'nope' does not exist (columns: x, i, b, u, name)")
    bad("arrow/multi.arrow#name", "numeric", "column 'name' is utf8 strings, not a numeric type")
    bad("arrow/multi.arrow", "column", "no #column given and the file has several numeric columns (x, i, b, u)")


# --------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------
def load_source(source, kind):
    path, _, col = source.partition("#")
    full = p(path)
    if kind == "npy":
        return np.load(full, allow_pickle=False)
    if kind == "zarr":
        return np.asarray(zarr.open_array(full, mode="r")[...])
    if kind == "arrow":
        if not col:
            with pa.memory_map(full) as src:
                names = pa.ipc.open_file(src).schema.names
            assert len(names) == 1, names
            col = names[0]
        return arrow_col_array(full, col)
    raise ValueError(kind)


def generator_info():
    return {
        "script": "data/make_fixtures.py",
        "seed": SEED,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "pyarrow": pa.__version__,
    }


def write_answers():
    fixtures = []
    for fx in FIXTURES:
        a = load_source(fx["source"], fx["kind"])
        entry = {"source": fx["source"], "kind": fx["kind"], "notes": fx["notes"]}
        entry.update(stats(a))
        fixtures.append(entry)
    doc = {"generator": generator_info(), "fixtures": fixtures, "bad": BAD}
    with open(p("answers.json"), "w") as fh:
        json.dump(doc, fh, indent=1, allow_nan=True)
        fh.write("\n")


# --------------------------------------------------------------------------
# verification (re-reads everything from disk)
# --------------------------------------------------------------------------
def expect_fail(fn, what):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    raise AssertionError(f"{what}: expected failure, loaded fine")


def verify():
    with open(p("answers.json")) as fh:
        doc = json.load(fh)
    assert doc["generator"] == generator_info()
    by_src = {f["source"]: f for f in doc["fixtures"]}
    assert len(by_src) == len(FIXTURES) == len(doc["fixtures"])
    for fx in FIXTURES:
        ans = by_src[fx["source"]]
        # 1) recompute from the file on disk
        a = load_source(fx["source"], fx["kind"])
        re = {"source": fx["source"], "kind": fx["kind"], "notes": fx["notes"]}
        re.update(stats(a))
        assert same(ans, re), (fx["source"], ans, re)
        # 2) file content equals the intended array (bit-for-bit incl. NaN positions)
        it = fx["_intended"]
        assert a.shape == it.shape, (fx["source"], a.shape, it.shape)
        assert our_dtype(a.dtype) == our_dtype(it.dtype), (fx["source"], a.dtype, it.dtype)
        assert np.array_equal(a, it, equal_nan=(a.dtype.kind == "f")), fx["source"]
        ia = {k: v for k, v in stats(it).items()}
        for k, v in ia.items():
            assert same(ans[k], v), (fx["source"], k, ans[k], v)
        # 3) independent sanity checks on the answer
        if ans["dtype"] not in FLOATS and ans["count"]:
            flat = np.asarray(it, order="C").ravel()
            assert ans["sum"] == int(np.asarray(flat, dtype=object).sum())
            assert ans["argmin"] == flat.tolist().index(ans["min"])
            assert ans["argmax"] == flat.tolist().index(ans["max"])
        assert ans["count"] + ans["nan_count"] == int(np.prod(ans["shape"], dtype=np.int64))
        assert ans["shape"] == list(it.shape) and ans["dtype"] == our_dtype(it.dtype)
        if ans["dtype"] in FLOATS:
            # plain-Python recomputation (no numpy reductions)
            flat = [float(x) for x in np.asarray(it, order="C").ravel().tolist()]
            good = [x for x in flat if x == x]
            assert ans["count"] == len(good) and ans["nan_count"] == len(flat) - len(good)
            if good:
                assert ans["min"] == min(good) and ans["max"] == max(good)
                first = [j for j, x in enumerate(flat) if x == x]
                assert ans["argmin"] == next(j for j in first if flat[j] == min(good))
                assert ans["argmax"] == next(j for j in first if flat[j] == max(good))
                if all(abs(x) != math.inf for x in good):
                    fs = math.fsum(good)
                    assert abs(ans["mean"] - fs / len(good)) <= 1e-12 * (1 + abs(fs / len(good)))
                    ss = math.fsum((x - fs / len(good)) ** 2 for x in good)
                    assert abs(ans["std"] - math.sqrt(ss / len(good))) <= 1e-9 * (1 + ans["std"])
                    tol = 1e-5 if ans["dtype"] == "f32" else 1e-9
                    assert abs(ans["sum"] - fs) <= tol * (1 + math.fsum(abs(x) for x in good)), (fx["source"], ans["sum"], fs)

    # spot checks on special fixtures
    s = by_src
    assert s["npy/i64_bigsum.npy"]["sum"] > 2**63
    assert s["npy/u64_bigsum.npy"]["sum"] > 2**64
    assert s["zarr/u64_100x3.zarr"]["sum"] > 2**64
    for src in ["npy/scalar_f64.npy", "npy/scalar_i64.npy", "zarr/f64_scalar.zarr"]:
        assert s[src]["shape"] == [] and s[src]["count"] == 1, s[src]
    assert s["npy/f64_allnan.npy"]["count"] == 0 and s["npy/f64_allnan.npy"]["sum"] == 0.0
    assert s["npy/f64_dups.npy"]["argmin"] == 7 and s["npy/f64_dups.npy"]["argmax"] == 9
    assert s["npy/f64_negzero.npy"]["argmin"] == 0
    assert s["npy/f64_inf.npy"]["min"] == -np.inf and s["npy/f64_inf.npy"]["argmin"] == 10
    assert s["npy/f64_posinf.npy"]["sum"] == np.inf
    assert s["zarr/f64_missing_nanfill_40x40.zarr"]["nan_count"] == 1600 - 15 * 20 - 30
    with open(p("npy/unaligned_f64.npy"), "rb") as fh:
        fh.seek(8)
        hl = struct.unpack("<H", fh.read(2))[0]
    assert (10 + hl) % 8 != 0
    for name in ["fortran_f64_37x23", "fortran_i32_37x23", "fortran_f64_5x6x7", "fortran_be_f64_37x23"]:
        assert np.load(p(f"npy/{name}.npy")).flags.f_contiguous
    for name, ver in [("v2_f64", 2), ("v3_f64", 3)]:
        with open(p(f"npy/{name}.npy"), "rb") as fh:
            assert fh.read(8)[6] == ver

    def chunk_files(store):
        root = zpath(store)
        out = []
        for dp, _, fns in os.walk(root):
            for fn in fns:
                if fn != "zarr.json":
                    out.append(os.path.relpath(os.path.join(dp, fn), root).replace(os.sep, "/"))
        return sorted(out)

    assert chunk_files("f64_missing_nanfill_40x40.zarr") == ["c/0/0", "c/0/1", "c/1/0", "c/1/1", "c/3/0"], \
        chunk_files("f64_missing_nanfill_40x40.zarr")
    assert chunk_files("i16_missing_fill7_30x30.zarr") == ["c/1/0", "c/1/1", "c/1/2"]
    assert chunk_files("u16_v2keys_20x20.zarr") == sorted(f"{i}.{j}" for i in range(3) for j in range(3))
    assert chunk_files("i8_dotkeys_30x10.zarr") == sorted(f"c.{i}.{j}" for i in range(5) for j in range(3))
    assert chunk_files("f32_empty_0x5.zarr") == []
    assert chunk_files("f64_scalar.zarr") == ["c"], chunk_files("f64_scalar.zarr")
    assert os.path.getsize(zpath("i32_raw_7x9x5.zarr/c/1/2/1")) == 4 * 4 * 3 * 4  # edge chunks stored full-size
    with open(zpath("f64_bigendian_13x11.zarr/c/0/0"), "rb") as fh:
        assert np.array_equal(np.frombuffer(fh.read(), ">f8").reshape(5, 5),
                              zarr.open_array(zpath("f64_bigendian_13x11.zarr"))[0:5, 0:5],
                              equal_nan=True)

    # bad inputs really are bad (or are valid-but-unsupported, as documented)
    fails = {}
    fails["bad/truncated.npy"] = expect_fail(lambda: np.load(p("bad/truncated.npy")), "truncated npy")
    fails["bad/bad_magic.npy"] = expect_fail(lambda: np.load(p("bad/bad_magic.npy")), "bad magic")
    fails["bad/bad_header.npy"] = expect_fail(lambda: np.load(p("bad/bad_header.npy")), "bad header")
    assert np.load(p("bad/complex128.npy")).dtype == np.complex128
    assert np.load(p("bad/unicode_U4.npy")).dtype == np.dtype("<U4")
    assert np.array_equal(zarr.open_array(p("bad/blosc.zarr"))[...], np.arange(50.0))
    with open(p("bad/blosc.zarr/zarr.json")) as fh:
        assert "blosc" in [c["name"] for c in json.load(fh)["codecs"]]
    fails["bad/short_chunk.zarr"] = expect_fail(lambda: zarr.open_array(p("bad/short_chunk.zarr"))[...], "short chunk")
    fails["bad/no_shape.zarr"] = expect_fail(lambda: zarr.open_array(p("bad/no_shape.zarr"))[...], "no shape")
    assert zarr.open_array(p("bad/complex128.zarr"))[...].dtype == np.complex128
    fails["bad/truncated.arrow"] = expect_fail(lambda: pa.ipc.open_file(p("bad/truncated.arrow")).read_all(),
                                               "truncated arrow")
    t = pa.ipc.open_file(p("arrow/multi.arrow")).read_all()
    assert "nope" not in t.column_names and t.schema.field("name").type == pa.string()
    with open(p("arrow/f32.feather"), "rb") as fh:
        assert fh.read().count(bytes.fromhex("04224d18")) >= 1   # an LZ4 frame magic inside
    with open(p("arrow/i64_zstd.arrow"), "rb") as fh:
        assert fh.read().count(bytes.fromhex("28b52ffd")) >= 2   # zstd frame magics inside
    r = pa.ipc.open_file(p("arrow/multi.arrow"))
    assert [r.get_batch(k).num_rows for k in range(r.num_record_batches)] == [100, 0, 257, 1000]
    return fails


def main():
    for d in ["npy", "zarr", "arrow", "bad"]:
        if os.path.exists(p(d)):
            shutil.rmtree(p(d))
    if os.path.exists(p("answers.json")):
        os.remove(p("answers.json"))
    make_npy()
    make_zarr()
    make_arrow()
    make_bad()
    write_answers()
    fails = verify()
    print(f"OK: {len(FIXTURES)} fixtures, {len(BAD)} bad inputs verified")
    for k, v in fails.items():
        print(f"  reference library error for {k}: {v[:150]}")


if __name__ == "__main__":
    main()
