# Reference counts and the cycle collector, seen from a script.
#
# Every value is an object on the managed heap. Reference counting frees most garbage at
# once; reference cycles wait for the generational collector (automatic, or gc.collect()).
#
#     chunkheap run examples/scripts/gc_tour.chs

def live():
    return heap.stats()["objects"]


x = []
# As in CPython, the count includes the argument's own reference: a fresh global list gives 2.
print("refcount of a fresh list:", sys.getrefcount(x))
y = [x, x]
print("after two more references:", sys.getrefcount(x))
del y
print("after del:", sys.getrefcount(x))

gc.disable()
base = live()

# A list that contains itself: reference counting alone cannot free it.
l = []
l.append(l)
del l

# A dict <-> list ring that also holds other objects.
ring = {"name": "ring", "payload": [1.5, "text", (1, 2)]}
items = [ring, 42]
ring["items"] = items
ring["self"] = ring
del ring, items


# A function whose default argument refers back to the function.
def remember(seen=[]):
    return seen


remember().append(remember)
del remember

# `base` itself is one new object since the baseline was taken (small ints are shared).
waiting = live() - base - 1
print("objects waiting for the collector:", waiting)
found = gc.collect()
print("gc.collect() found", found, "unreachable containers")
left = live() - base - 1
print("objects left over:", left)
gc.enable()

stats = gc.get_stats()
for generation in range(3):
    s = stats[generation]
    print("generation", generation, "collections:", s["collections"], "collected:", s["collected"])

h = heap.stats()
print("live objects by kind:", sorted(h["by_kind"].items()))
print("threshold:", gc.get_threshold(), "enabled:", gc.isenabled())
