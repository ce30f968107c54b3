"""How many XLA programs a sweep compiles, and how long that takes (issue 31 item 5).

Runs `lycb_jax.workflows.study.sweep` (2 structures x 2 temperatures, heat, NVT, NpT and production with
the streaming MSD, a short protocol) with `jax_log_compiles` on, the persistent compilation cache off,
and counts the compilations per jitted function from JAX's log. Seconds of compile time as JAX logs them.

    python benchmarks/sweep_programs.py [--model chgnet-0.3.0-lycb-pbe] [--out results.json]
    PYTHONPATH=/tmp/older python benchmarks/sweep_programs.py   # an older lycb_jax, same measurement
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import tempfile
import time

os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
import jax  # noqa: E402

LINE = re.compile(r"Finished XLA compilation of (.+?) in ([0-9.e-]+) sec")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="chgnet-0.3.0-lycb-pbe")
    parser.add_argument("--out", help="JSON file for the counts")
    args = parser.parse_args()
    jax.config.update("jax_log_compiles", True)
    compiles = []

    class Collect(logging.Handler):
        def emit(self, record):
            m = LINE.search(record.getMessage())
            if m:
                compiles.append((m.group(1), float(m.group(2))))

    root = logging.getLogger("jax")
    root.addHandler(Collect())
    root.setLevel(logging.DEBUG)
    for h in root.handlers:  # JAX's own stderr handler stays quiet
        if not isinstance(h, Collect):
            h.setLevel(logging.WARNING)

    import lycb_jax
    from lycb_jax.io.structures import default_structure
    from lycb_jax.md import Protocol
    from lycb_jax.workflows.study import sweep

    model = lycb_jax.load_model(args.model)
    s = default_structure(large=False)
    protocol = Protocol(temperatures_K=(600.0, 800.0), dt_fs=2.0, heat_ps=0.1, nvt_ps=0.1, npt_ps=0.4,
                        npt_average_ps=0.2, production_ps=1.0, save_every_fs=20.0, chunk_ps=0.2,
                        checkpoint_every_ps=0.2, barostat="iso", streaming_msd_every_fs=20.0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sweep(model, {"A": s, "B": s.copy()}, protocol, out=tmp)
    wall = time.perf_counter() - t0
    count, seconds = collections.Counter(), collections.defaultdict(float)
    for name, sec in compiles:
        count[name] += 1
        seconds[name] += sec
    big = {n: dict(programs=count[n], compile_s=round(seconds[n], 2)) for n in count if seconds[n] > 1.0}
    result = dict(lycb_jax=os.path.dirname(lycb_jax.__file__), device=jax.devices()[0].device_kind,
                  backend=jax.default_backend(), model=args.model, atoms=len(s), replicas=4, wall_s=round(wall, 1),
                  programs_over_1s=big, all_programs=sum(count.values()),
                  compile_s_all=round(sum(seconds.values()), 1), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
