# Daily means of a 2-D sensor array (sensors x hourly samples): reshape the time axis into
# (days, 24) per sensor and reduce along the hours, skipping NaN gaps.
#   chunkheap run examples/scripts/daily_mean.chs SENSORS.npy OUT.npy
x = load(sys.argv[1])
sensors = x.shape[0]
hours = x.shape[1]
days = hours // 24
per_day = x[:, 0:days * 24].reshape(sensors * days, 24)
daily = nanmean(per_day, axis=1).reshape(sensors, days)
save(daily, sys.argv[2])
print("sensors", sensors, "days", days, "overall mean", nanmean(daily))
print("hottest day of sensor 0:", argmax(daily[0]))
