"""Writes data/math_answers.json: correctly rounded exp and tanh (mpmath at 200 bits) of seeded
f64 arguments, the reference for the vectorised elementary functions (src/expr/vmath.rs).

Values are stored as repr strings. Run: python3 data/make_math_fixtures.py (needs mpmath)."""
import json
import os
import random

import mpmath

mpmath.mp.prec = 200
rng = random.Random(6)
here = os.path.dirname(os.path.abspath(__file__))


def args(lo, hi, n):
    return [rng.uniform(lo, hi) for _ in range(n)]


cases = {
    "exp": args(-745.0, 710.0, 2000) + args(-2.0, 2.0, 1000) + args(-1e-6, 1e-6, 200),
    "tanh": args(-25.0, 25.0, 1000) + args(-1.2, 1.2, 1500) + args(-1e-3, 1e-3, 300),
}
out = {"mpmath": mpmath.__version__, "prec": mpmath.mp.prec}
for name, xs in cases.items():
    f = getattr(mpmath, name)
    out[name] = [[repr(x), repr(float(f(mpmath.mpf(x))))] for x in xs]
with open(os.path.join(here, "math_answers.json"), "w") as fh:
    json.dump(out, fh, indent=0)
print(sum(len(v) for v in cases.values()), "values")
