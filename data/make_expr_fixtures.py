"""Writes data/expr/*.npy inputs and data/expr_answers.json: NumPy's results for every
element-wise operation, reduction, scan and view the expression engine implements.

Values are stored as strings (repr of floats, exact integers) so NaN, inf and 64-bit integers
survive JSON. An operation NumPy rejects is stored as {"error": message}.
Run: python data/make_expr_fixtures.py (NumPy 2.x)."""
import json
import operator
import os
import warnings

import numpy as np

warnings.simplefilter("ignore")
here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, "expr")
os.makedirs(out_dir, exist_ok=True)

nan, inf = float("nan"), float("inf")
inputs = {
    "xf64": np.array([-3.5, -1.0, -0.0, 0.0, 0.5, 1.0, 2.5, 7.0, nan, inf, -inf, 1e300, 3.0, -2.0, 100.0, 0.25]),
    "yf64": np.array([2.0, -3.0, 1.0, -1.0, 0.0, 4.0, -2.5, 3.0, 1.0, 2.0, inf, 1e10, nan, -0.5, 7.0, 0.0]),
    "xi32": np.array([-7, -1, 0, 1, 2, 3, 5, 7, 100, -100, 2147483647, -2147483648, 13, -13, 4, 6], dtype=np.int32),
    "yi32": np.array([2, -3, 1, -1, 0, 4, 3, 2, 7, -7, 1, -1, 5, 5, -4, 0], dtype=np.int32),
    "pi32": np.array([2, 3, 1, 0, 0, 4, 3, 2, 7, 1, 1, 1, 5, 5, 4, 0], dtype=np.int32),
    "xu8": np.array([0, 1, 2, 3, 100, 200, 255, 7, 8, 9, 10, 11, 12, 13, 14, 15], dtype=np.uint8),
    "yu8": np.array([3, 1, 2, 0, 7, 200, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], dtype=np.uint8),
    "xf32": np.array([-3.5, -1.0, -0.0, 0.0, 0.5, 1.0, 2.5, 7.0, nan, inf, -inf, 3e38, 3.0, -2.0, 100.0, 0.25], dtype=np.float32),
    "yf32": np.array([2.0, -3.0, 1.0, -1.0, 0.0, 4.0, -2.5, 3.0, 1.0, 2.0, inf, 1e10, nan, -0.5, 7.0, 0.0], dtype=np.float32),
    "xbool": np.array([True, False, True, True, False, False, True, False] * 2),
    "ybool": np.array([True, True, False, False, True, False, True, False] * 2),
    "xi64": np.array([-(2**62), 2**62, -1, 0, 1, 5, -5, 9, 2**40, -(2**40), 7, 8, 100, -100, 3, 2**63 - 1], dtype=np.int64),
    "xu64": np.array([2**64 - 1, 0, 1, 2, 2**63, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], dtype=np.uint64),
    "clean": np.array([-3.7, -1.2, -0.5, 0.0, 0.5, 1.5, 2.5, 7.9, 300.2, -300.7, 65.5, 1e9, 3.0, -2.0, 100.0, 0.25]),
    "row": np.array([1.0, -2.0, 3.0, 0.5]),
    "col": np.array([[10.0], [20.0], [-1.0]]),
    "m3": np.arange(60, dtype=np.int64).reshape(3, 4, 5),
}
mf = np.arange(24, dtype=np.float64).reshape(4, 6) * 1.5 - 7.0
mf[1, 2] = nan
mf[3, 5] = nan
inputs["mf64"] = mf
inputs["mnan"] = np.array([[nan, nan, 1.0], [2.0, nan, -1.0]])
inputs["mf32"] = (np.arange(24, dtype=np.float32).reshape(4, 6) - 11.5) / 3
inputs["mi32"] = (np.arange(24, dtype=np.int32).reshape(4, 6) * 7919) % 97 - 40
inputs["mu8"] = ((np.arange(24).reshape(4, 6) * 37) % 256).astype(np.uint8)
inputs["mbool"] = (np.arange(24).reshape(4, 6) % 3 == 0)
inputs["mties"] = np.array([[3, 1, 3, 1], [2, 2, 2, 2], [0, 5, 5, 0]], dtype=np.int16)

for k, v in inputs.items():
    np.save(os.path.join(out_dir, k + ".npy"), v)


def enc(a):
    a = np.asarray(a)
    def one(x):
        if a.dtype.kind == "f":
            return repr(float(x))
        if a.dtype.kind == "b":
            return "True" if x else "False"
        return str(int(x))
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": [one(x) for x in a.ravel()]}


cases = []


def case(kind, name, args, fn, **extra):
    try:
        r = fn()
        cases.append(dict(kind=kind, name=name, args=args, result=enc(r), **extra))
    except Exception as e:  # NumPy rejects it: record the message
        cases.append(dict(kind=kind, name=name, args=args, error=str(e), **extra))


binops = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "//": np.floor_divide,
    "%": np.remainder, "**": np.power, "minimum": np.minimum, "maximum": np.maximum,
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal,
    "!=": np.not_equal, "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor, "&": np.bitwise_and, "|": np.bitwise_or, "^": np.bitwise_xor,
}
pairs = [("xf64", "yf64"), ("xi32", "yi32"), ("xi32", "pi32"), ("xi32", "yf64"), ("xu8", "yi32"),
         ("xf32", "yf64"), ("xf32", "yf32"), ("xu8", "yu8"), ("xbool", "ybool"), ("xi64", "xu64"),
         ("xu8", "xf32"), ("row", "col"), ("xbool", "xi32")]
for name, f in binops.items():
    for a, b in pairs:
        case("binary", name, [a, b], lambda: f(inputs[a], inputs[b]))

unops = ["negative", "abs", "sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "tanh",
         "floor", "ceil", "round", "logical_not", "invert", "isnan", "isfinite", "isinf"]
for name in unops:
    f = {"abs": np.absolute, "round": np.round}.get(name) or getattr(np, name)
    for a in ["xf64", "xf32", "xi32", "xu8", "xbool", "xi64"]:
        if name in ("sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "tanh", "round") and a in ("xu8", "xbool"):
            continue  # NumPy computes these in float16, which chunkheap replaces by float32
        case("unary", name, [a], lambda: f(inputs[a]))

scalars = [("xu8", "+", 3), ("xu8", "*", 2.5), ("xf32", "*", 2.5), ("xi32", "//", 2), ("xbool", "+", 1),
           ("xu8", "+", 300), ("xi32", "**", 2), ("xf64", "-", 1), ("xi64", "%", -3), ("xf32", "/", 3)]
# `a ** s` with the operator: NumPy computes exponents 2, 0.5 and -1 of float arrays as square,
# sqrt and reciprocal (sqrt gives -0.0 for -0.0 and nan for -inf, where power gives 0.0 and inf).
scalars += [(a, "**", s) for a in ("xf64", "xf32") for s in (2, 2.0, 0.5, -1, -1.0, 0, 1, 3, -2, 1.5, -0.5)]
scalars += [("xi64", "**", 2), ("xu8", "**", 2), ("xi32", "**", 0.5), ("xi32", "**", -1), ("xi32", "**", 0),
            ("xbool", "**", 2), ("xbool", "**", 0), ("xbool", "**", 1), ("xbool", "**", 3), ("xbool", "**", -1)]
for a, op, s in scalars:
    case("scalar", op, [a, repr(s)], lambda: operator.pow(inputs[a], s) if op == "**" else binops[op](inputs[a], s))

case("where", "where", ["xbool", "xf64", "yi32"], lambda: np.where(inputs["xbool"], inputs["xf64"], inputs["yi32"]))
case("where", "where", ["ybool", "xu8", "xf32"], lambda: np.where(inputs["ybool"], inputs["xu8"], inputs["xf32"]))
case("clip", "clip", ["xf64", "-1.0", "5.0"], lambda: np.clip(inputs["xf64"], -1.0, 5.0))
case("clip", "clip", ["xi32", "-5", "50"], lambda: np.clip(inputs["xi32"], -5, 50))
for a, d in [("clean", "int32"), ("clean", "uint8"), ("clean", "bool"), ("xi32", "uint8"), ("xi32", "float32"),
             ("xi64", "float64"), ("xu64", "int64"), ("xf64", "float32"), ("xbool", "float64"), ("xi32", "int8")]:
    case("astype", d, [a], lambda: inputs[a].astype(d))

reds = ["sum", "prod", "mean", "var", "std", "min", "max", "argmin", "argmax", "count_nonzero", "any",
        "all", "nansum", "nanprod", "nanmean", "nanvar", "nanstd", "nanmin", "nanmax", "nanargmin", "nanargmax"]
for name in reds:
    f = getattr(np, name)
    for a in ["mf64", "mf32", "mi32", "mu8", "mbool", "mties", "mnan"]:
        for axis in [None, 0, 1, -1]:
            if name.startswith("nan") and inputs[a].dtype.kind != "f":
                continue
            case("reduce", name, [a], lambda: f(inputs[a], axis=axis), axis=axis)
    if name in ("var", "std", "nanvar", "nanstd"):
        for axis in [None, 0, 1]:
            case("reduce", name, ["mf64"], lambda: f(inputs["mf64"], axis=axis, ddof=1), axis=axis, ddof=1)
            case("reduce", name, ["mi32"], lambda: f(inputs["mi32"], axis=axis, ddof=1), axis=axis, ddof=1)

for name in ["cumsum", "cumprod"]:
    f = getattr(np, name)
    for a in ["mf64", "mi32", "mu8", "mbool", "mf32"]:
        for axis in [None, 0, 1]:
            case("scan", name, [a], lambda: f(inputs[a], axis=axis), axis=axis)

m3 = inputs["m3"]
views = {
    "1:3": lambda: m3[1:3], ":,2": lambda: m3[:, 2], "::-1,1:4:2,::2": lambda: m3[::-1, 1:4:2, ::2],
    "-1": lambda: m3[-1], "0,-1,1:": lambda: m3[0, -1, 1:], ":,:,-2:": lambda: m3[:, :, -2:],
    ":,5:1:-2": lambda: m3[:, 5:1:-2], "5:1:-2": lambda: m3[5:1:-2], "10:": lambda: m3[10:],
}
for k, f in views.items():
    case("slice", k, ["m3"], f)
for shp in [(-1, 6), (60,), (5, 3, 4), (2, -1, 5)]:
    case("reshape", repr(list(shp)), ["m3"], lambda: m3.reshape(shp))
case("concat", "0", ["mf64", "mf64"], lambda: np.concatenate([inputs["mf64"], inputs["mf64"]], axis=0))
case("concat", "1", ["mf64", "mi32"], lambda: np.concatenate([inputs["mf64"], inputs["mi32"]], axis=1))

with open(os.path.join(here, "expr_answers.json"), "w") as fh:
    json.dump({"numpy": np.__version__, "cases": cases}, fh, indent=0)
print(len(cases), "cases")
