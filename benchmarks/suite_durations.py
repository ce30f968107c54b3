"""Per-file worker time of a pytest-xdist run from the conftest crash logs (one "[HH:MM:SS] start nodeid" line per test,
in $LYCB_JAX_TEST_CRASH_DIR, a /tmp/lycb_jax_test_crash_* folder per run): time from a test's start to the next test's
start on the same worker, summed per file, one column per run.
  python benchmarks/suite_durations.py /tmp/lycb_jax_test_crash_A /tmp/lycb_jax_test_crash_B"""

import datetime
import glob
import re
import sys


def per_file(d):
    per={}; span={}
    for f in glob.glob(d+"/gw*.log"):
        ev=[]
        for line in open(f):
            m=re.match(r"\[(\d\d:\d\d:\d\d)\] start (\S+)",line)
            if m: ev.append((datetime.datetime.strptime(m.group(1),"%H:%M:%S"),m.group(2)))
        for (t,n),(t2,_) in zip(ev,ev[1:]):
            fn=n.split("::")[0].split("/")[-1]; per[fn]=per.get(fn,0)+(t2-t).total_seconds()
        span[f.split('/')[-1][:3]]=(ev[-1][0]-ev[0][0]).total_seconds()
    return per, span
ds=sys.argv[1:]
res=[per_file(d) for d in ds]
print("spans", [r[1] for r in res])
keys=sorted(set().union(*[r[0] for r in res]), key=lambda k:-res[0][0].get(k,0))
for k in keys[:25]:
    print(f"{k:40s}", "  ".join(f"{r[0].get(k,0):6.0f}" for r in res))
print("total", [sum(r[0].values()) for r in res])
