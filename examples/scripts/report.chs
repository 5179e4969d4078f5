# A histogram + exact quantiles report of one column.
#   chunkheap run examples/scripts/report.chs DATA[#COLUMN] [BINS]
x = load(sys.argv[1])
bins = 20
if len(sys.argv) > 2:
    bins = int(sys.argv[2])
print("values:", x.size, " NaN:", int(sum(isnan(x))))
print("min", nanmin(x), " max", nanmax(x), " mean", nanmean(x), " std", nanstd(x))
qs = [0.01, 0.25, 0.5, 0.75, 0.99]
vals = nanquantile(x, qs)
for i in range(len(qs)):
    print("  q", qs[i], "=", vals[i])
counts, edges = histogram(x, bins=bins)
top = max(counts)
for i in range(bins):
    print("  [", round(edges[i] * 1000) / 1000, ",", round(edges[i + 1] * 1000) / 1000, ")", "#" * int(40 * counts[i] / top))
