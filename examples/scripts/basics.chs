# A tour of the script language (no arrays): functions, recursion, containers, formatting.
#
#     chunkheap run examples/scripts/basics.chs 12

def fib(n):
    """Fibonacci numbers, the slow way: recursion works as in Python."""
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def describe(values, unit="ms", precision=2):
    """Summary statistics of a list of numbers, as a dict."""
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    median = ordered[mid] if n % 2 == 1 else (ordered[mid - 1] + ordered[mid]) / 2
    mean = sum(ordered) / n
    var = 0.0
    for v in ordered:
        var += (v - mean) ** 2
    return {
        "n": n,
        "min": ordered[0],
        "max": ordered[-1],
        "median": median,
        "mean": round(mean, precision),
        "std": round((var / n) ** 0.5, precision),
        "unit": unit,
    }


def second(pair):
    return pair[1]


n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
print("fib({}) = {}".format(n, fib(n)))

# Python's number semantics: floor division and modulo follow the divisor's sign,
# true division gives a float, floats print as the shortest round-trip text.
for a, b in [(7, 2), (-7, 2), (7, -2)]:
    print("{:>3} // {:>2} = {:>2}   {:>3} % {:>2} = {:>2}".format(a, b, a // b, a, b, a % b))
print("7 / 2 =", 7 / 2, " 2 ** -1 =", 2 ** -1, " 0.1 + 0.2 =", 0.1 + 0.2, " 1e16 =", 1e16)

timings = [12.5, 9.75, 14.0, 11.25, 10.5, 30.0, 9.5]
stats = describe(timings, precision=3)
for key in ["n", "min", "median", "mean", "std", "max"]:
    unit = "" if key == "n" else stats["unit"]
    print("{:<7}{:>8} {}".format(key, stats[key], unit))

# Slicing, unpacking, enumerate/zip, dict methods, sorting with a key.
letters = "abcdefgh"
print(letters[::2], letters[-3:], letters[::-1])
for i, (name, size) in enumerate(zip(["small", "medium", "large"], [1, 10, 100])):
    print(i, name.upper(), size * 1024)

counts = {}
for word in "the quick brown fox jumps over the lazy dog the end".split():
    counts[word] = counts.get(word, 0) + 1
top = sorted(counts.items(), key=second, reverse=True)[:3]
print("most common:", top)

# Chained comparisons, conditional expressions, `in`, and/or returning operands.
x = 5
print(1 < x <= 5, "odd" if x % 2 else "even", "fox" in counts, [] or "empty")
