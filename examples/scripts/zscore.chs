# z-score normalisation of a big file, written to Zarr (compressed), in two streaming passes:
# one fused pass for mean and std, one to write (x - mean) / std chunk by chunk.
#   chunkheap run examples/scripts/zscore.chs IN.npy OUT.zarr
if len(sys.argv) != 3:
    print("usage: zscore.chs IN OUT.zarr")
else:
    x = load(sys.argv[1])
    m = mean(x)
    s = std(x)
    print("mean", m, "std", s)
    z = (x - m) / s
    save(z, sys.argv[2], codec="zstd:3")
    print("wrote", sys.argv[2], z.shape, z.dtype)
