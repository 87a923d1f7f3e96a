# Prints one line per run: latency, per-process CPU and server CPU per delivery.
#   python3 bench/results/issue17-threads/summarize.py bench/results/issue17-threads/fanout-runtime
import glob, json, os, sys

for shape in ['a-100x10-r2000', 'b-10x100-r300']:
    print(shape)
    for d in sorted(glob.glob(os.path.join(sys.argv[1], '*'))):
        f = os.path.join(d, f'{shape}.json')
        if not os.path.exists(f):
            continue
        j = json.load(open(f))
        cpu, lat = j['cpu'], j['latency_ms']
        server = sum(v['pct_of_core'] for k, v in cpu.items() if k != 'loadgen')
        print(f"  {os.path.basename(d)}: p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} ms; "
              f"fanout {cpu['fanout1']['pct_of_core']}+{cpu['fanout2']['pct_of_core']}% "
              f"ingress {cpu['ingress1']['pct_of_core']}+{cpu['ingress2']['pct_of_core']}% "
              f"redis {cpu['redis']['pct_of_core']}%; server {server * 10000 / j['deliveries_per_s']:.1f} µs/delivery; "
              f"lost {j['lost']}")
