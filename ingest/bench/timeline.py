# Usage: timeline.py LOG CPUSAMPLES BIN_S: chains finished and cores busy per time bin, from
# an ingest run's JSON log (`--log-format json`) and "time busy_jiffies total_jiffies" samples.
import json, sys, datetime
log = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"timestamp"')]
ts = lambda r: datetime.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
samples = [tuple(map(float, l.split())) for l in open(sys.argv[2])]  # t, busy_jiffies, total_jiffies
bin_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
t0 = ts(log[0]) - log[0]["fields"].get("seconds", 0)
events = {r["fields"]["message"]: ts(r) - t0 for r in log if r["fields"]["message"] != "source finished"}
print("events:", {k: round(v, 3) for k, v in events.items()})
done = [(ts(r) - t0, r["fields"]["chains"]) for r in log if r["fields"]["message"] == "source finished"]
end = max(events.values())
nb = int(end / bin_s) + 1
chains = [0] * nb
for t, c in done:
    chains[min(int(t / bin_s), nb - 1)] += c
# cores busy per bin from /proc/stat deltas (jiffies of 10 ms; ncpu from the sample's total rate)
busy = [None] * nb
for (ta, ba, tota), (tb, bb, totb) in zip(samples, samples[1:]):
    mid = (ta + tb) / 2 - t0
    if 0 <= mid < end:
        k = int(mid / bin_s)
        cores = (bb - ba) / 100.0 / (tb - ta)
        busy[k] = cores if busy[k] is None else (busy[k] + cores) / 2
for k in range(nb):
    print(f"{k*bin_s:5.2f}-{(k+1)*bin_s:5.2f} s: {chains[k]:5d} chains  {'-' if busy[k] is None else f'{busy[k]:5.1f}'} cores busy")
