"""Writes data/math_answers.json: correctly rounded exp, tanh, log, log2, log10, sin and cos
(mpmath at 200 bits) of seeded f64 arguments, the reference for the vectorised elementary functions (src/expr/vmath.rs).

Values are stored as repr strings. Run: python3 data/make_math_fixtures.py (needs mpmath)."""
import json
import math
import os
import random

import mpmath

mpmath.mp.prec = 200
rng = random.Random(6)
here = os.path.dirname(os.path.abspath(__file__))


def args(lo, hi, n):
    return [rng.uniform(lo, hi) for _ in range(n)]


def logs(n):
    """Positive arguments: log-uniform over the normal range, uniform around 1 and near the
    ends of the reduction's interval, sqrt(1/2) and sqrt(2) times powers of two."""
    xs = [2.0 ** rng.uniform(-1022.0, 1024.0) for _ in range(n)]
    xs += args(0.5, 2.0, n) + args(0.999, 1.001, n // 4) + args(1e-300, 1e-290, n // 8)
    xs += [2.0 ** rng.randint(-1000, 1000) * rng.uniform(0.7, 0.72) for _ in range(n // 4)]
    xs += [2.0 ** rng.randint(-1000, 1000) * rng.uniform(1.40, 1.43) for _ in range(n // 4)]
    return [x for x in xs if x < 1.7976931348623157e308]


def angles(n):
    """Uniform over a few turns and up to 2^20, tiny, and the doubles nearest to multiples of
    pi/2 with their neighbours (where the reduced argument is smallest)."""
    xs = args(-10.0, 10.0, n) + args(-1048575.0, 1048575.0, n // 2) + args(-1e-5, 1e-5, n // 8)
    for _ in range(n // 8):
        x = float(rng.randint(1, 660000) * mpmath.pi / 2) * rng.choice([1, -1])
        xs += [math.nextafter(x, -math.inf), x, math.nextafter(x, math.inf)]
    return xs


cases = {
    "exp": args(-745.0, 710.0, 2000) + args(-2.0, 2.0, 1000) + args(-1e-6, 1e-6, 200),
    "tanh": args(-25.0, 25.0, 1000) + args(-1.2, 1.2, 1500) + args(-1e-3, 1e-3, 300),
    "log": logs(1200),
    "log2": logs(600),
    "log10": logs(600),
    "sin": angles(1200),
    "cos": angles(1200),
}
funcs = {"log2": lambda x: mpmath.log(x, 2)}
out = {"mpmath": mpmath.__version__, "prec": mpmath.mp.prec}
for name, xs in cases.items():
    f = funcs.get(name) or getattr(mpmath, name)
    out[name] = [[repr(x), repr(float(f(mpmath.mpf(x))))] for x in xs]
with open(os.path.join(here, "math_answers.json"), "w") as fh:
    json.dump(out, fh, indent=0)
print(sum(len(v) for v in cases.values()), "values")
