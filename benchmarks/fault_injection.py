"""Fault injection for every long-running command: SIGKILL at named points and at random wall-clock
times, resume with --resume until done, and compare with an uninterrupted run; corrupted and
truncated checkpoints; a read-only output folder and a full disk.

For each command (tiny inputs, CPU):

1. one uninterrupted reference run, recording the fault points it passes ($LYCB_JAX_FAULT_LOG);
2. chains of runs in a fresh folder: each run is killed (SIGKILL) at a named point
   ($LYCB_JAX_FAULT="point:n", :mod:`lycb_jax.io.faults`: inside checkpoint writes between the temporary
   file and the rename, after the rename, mid-append of trajectory frames, ...) or at a random time
   from outside, then resumed with --resume; when a run finishes, the chain's outputs are compared
   with the reference (bit-identical arrays / bytes: see ``COMPARED``) and a new chain starts, until
   ``--kills`` kills are done;
3. corruption: a run killed after a checkpoint, its newest checkpoint truncated or a byte flipped,
   then resumed: the damage must be reported (a WARNING naming the file) and the result equal the
   reference; both generations damaged: a clear error and no traceback;
4. write failure: the output folder made read-only (chattr +i as root, else chmod) or the
   checkpoint's temporary file pointed at /dev/full (ENOSPC), then resumed: the run must stop with
   one message naming the folder and leave the last checkpoint unchanged; a resume afterwards must
   finish equal to the reference.

Prints a table: command, kills, resumes finished, chains equal to the reference, corruptions
detected, write-failure behaviour. Also writes ``<work>/results.jsonl``.

    nice -n 5 python benchmarks/fault_injection.py --work /tmp/fi --kills 20
    python benchmarks/fault_injection.py --commands md finetune --kills 4   # a quick look

``structures`` has no checkpoint (one batched relaxation; it writes its CIF/CSV files atomically):
a killed run is simply run again, and compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LYC30 = ROOT / "lycb_jax" / "data" / "Li3YCl6_P-3m1_ordered30.cif"

# The CLI, with the tests' Lennard-Jones model registered (a checkpoint folder of it is loadable with --model).
WRAPPER = f"""
import os, sys
if os.environ.get("FI_SNAPSHOT"):
    sys.path.insert(0, os.environ["FI_SNAPSHOT"])
sys.path.insert(0, {str(ROOT / 'tests')!r})
import potentials
potentials.register()
from lycb_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""

LABELLER = """from ase.calculators.lj import LennardJones


def ArgonLJ():
    return LennardJones(epsilon=0.0125, sigma=3.40, rc=6.0, smooth=True)
"""

MD_TOML = """temperatures_K = [900.0, 1100.0]
dt_fs = 2.0
start_K = 100.0
heat_ps = 0.04
nvt_ps = 0.04
npt_ps = 0.0
production_ps = 0.2
save_every_fs = 10.0
chunk_ps = 0.04
checkpoint_every_ps = 0.04
"""

# study / sweep: the diffusion analysis refuses a production too short to pass one hop; 30-atom LYC with
# CHGNet would need tens of ps on 2 CPU cores, so these two run Lennard-Jones argon gas (32 atoms, a = 9 A)
GAS_TOML = """temperatures_K = [1500.0, 2500.0]
dt_fs = 5.0
start_K = 300.0
heat_ps = 0.1
nvt_ps = 0.0
npt_ps = 0.0
production_ps = 1.0
save_every_fs = 10.0
chunk_ps = 0.1
checkpoint_every_ps = 0.2
"""

ACTIVE_JSON = dict(t_start_K=40, t_max_K=80, dt_K=40, per_iteration=8, md_dt_fs=5.0, heat_ps=0.1, npt_ps=0.5,
                   npt_average_ps=0.25, sample_ps=0.5, save_every_fs=25.0, pressure_bar=1.0,
                   finetune=dict(epochs=10, batch_size=2, learning_rate=1e-3, val_fraction=0.25, test_fraction=0.25,
                                 refit_composition=False))

COMPARED = {
    "md": "every dataset and attribute of trajectory.h5 (bit-identical)",
    "study": "md/trajectory.h5 (bit-identical) and transport.json (equal numbers); LJ argon gas",
    "sweep": "md/trajectory.h5 (bit-identical) and sweep.csv (bytes); LJ argon gas",
    "finetune": "params.msgpack (bytes), best epoch, test metrics and per-epoch losses",
    "structures": "LYC_ranking.csv and the top CIFs (bytes)",
    "active-learn": "each iteration's candidates/labelled extxyz (bytes) and the final model's params.msgpack (bytes)",
}


# -- inputs -------------------------------------------------------------------------------------------------

def prepare(work: Path) -> dict:
    """Input files in ``work/inputs``: MD config, a Br-substituted copy of the 30-atom cell (sweep),
    the LJ start model, LJ-labelled argon data (finetune), active-learning config and labeller."""
    inp = work / "inputs"
    inp.mkdir(parents=True, exist_ok=True)
    (inp / "md.toml").write_text(MD_TOML)
    (inp / "gas.toml").write_text(GAS_TOML)
    from ase.io import read, write

    shutil.copy(LYC30, inp / "LYC.cif")
    lyc = read(LYC30)
    lycb = lyc.copy()
    cl = [i for i, s in enumerate(lycb.get_chemical_symbols()) if s == "Cl"]
    lycb.symbols[cl[0]] = "Br"
    write(inp / "LYCB.cif", lycb)
    (inp / "fi_labeller.py").write_text(LABELLER)
    (inp / "active.json").write_text(json.dumps(ACTIVE_JSON))
    sys.path.insert(0, str(ROOT / "tests"))
    import potentials

    from lycb_jax.models import save_checkpoint

    potentials.register()

    if not (inp / "lj_start" / "manifest.json").exists():
        save_checkpoint(inp / "lj_start", potentials.lj_model())
    if not (inp / "argon.extxyz").exists():
        frames = []
        calc = potentials._ase_lj(None)
        for seed in range(12):
            a = potentials.argon(2, 5.30 + 0.02 * (seed % 4), seed)
            a.calc = calc
            a.get_potential_energy()
            frames.append(a)
        write(inp / "argon.extxyz", frames)
    for seed in (0, 1):  # study / sweep: dilute argon (a = 9 A), fast enough for the diffusion analysis
        if not (inp / f"gas_{seed}.extxyz").exists():
            write(inp / f"gas_{seed}.extxyz", potentials.argon(2, 9.0, seed))
    for name in ("Ar_a", "Ar_b"):
        if not (inp / f"{name}.extxyz").exists():
            write(inp / f"{name}.extxyz", potentials.argon(2, 5.30 if name == "Ar_a" else 5.45, int(name == "Ar_b")))
    return {"inp": inp}


def command_args(cmd: str, inp: Path, out: Path) -> list[str]:
    """The lycb-jax arguments of ``cmd`` writing into ``out`` (without --resume)."""
    md = ["--config", str(inp / "md.toml"), "--out", str(out)]
    if cmd == "md":
        return ["md", str(inp / "LYC.cif"), *md]
    gas = ["--config", str(inp / "gas.toml"), "--model", str(inp / "lj_start"), "--species", "Ar", "--out", str(out)]
    if cmd == "study":
        return ["study", "--structure", str(inp / "gas_0.extxyz"), *gas]
    if cmd == "sweep":
        return ["sweep", str(inp / "gas_0.extxyz"), str(inp / "gas_1.extxyz"), *gas]
    if cmd == "finetune":
        return ["finetune", str(inp / "argon.extxyz"), "--model", str(inp / "lj_start"), "--out", str(out),
                "--epochs", "25", "--batch-size", "2", "--learning-rate", "1e-3", "--no-refit-composition",
                "--val-fraction", "0.25", "--test-fraction", "0.25", "--quiet"]
    if cmd == "structures":
        return ["structures", "--parent", "LYC", "--supercell", "1", "1", "1", "--max-candidates", "3",
                "--max-steps", "40", "--batch-size", "3", "--top", "2", "--out", str(out)]
    if cmd == "active-learn":
        return ["active-learn", str(inp / "Ar_a.extxyz"), str(inp / "Ar_b.extxyz"), "--model", str(inp / "lj_start"),
                "--config", str(inp / "active.json"), "--labeller", "fi_labeller:ArgonLJ", "--out", str(out)]
    raise ValueError(cmd)


def resumable(cmd: str, out: Path) -> bool:
    """Whether the next run of ``cmd`` gets --resume: always for MD and the loop (they start afresh when
    there is nothing yet); finetune only with a train state (``finetune --resume`` refuses to start
    afresh); structures never (no checkpoint: a killed run is run again)."""
    if cmd == "finetune":
        return any((out / n).exists() for n in ("train_state.npz", "train_state.prev.npz"))
    return cmd != "structures"


def checkpoint_of(cmd: str, out: Path) -> Path | None:
    """The newest checkpoint file a run of ``cmd`` in ``out`` has written (None: none yet)."""
    if cmd == "md":
        cands = [out / "checkpoint.npz"]
    elif cmd in ("study", "sweep"):
        cands = [out / "md" / "checkpoint.npz"]
    elif cmd == "finetune":
        cands = [out / "train_state.npz"]
    elif cmd == "active-learn":
        cands = sorted(out.glob("iter_*/model/train_state.npz")) + sorted(out.glob("iter_*/md_*/checkpoint.npz"))
    else:
        return None
    return next((c for c in cands if c.exists()), None)


# -- running ------------------------------------------------------------------------------------------------

def run(args: list[str], env: dict, cwd: Path, kill_after_s: float | None = None, timeout: float = 1800):
    """(return code, seconds, output); SIGKILL from outside after ``kill_after_s`` seconds."""
    t0 = time.time()
    proc = subprocess.Popen([PY, "-c", WRAPPER, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    limit = kill_after_s if kill_after_s is not None else timeout
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        if kill_after_s is None:
            raise TimeoutError(f"{args[0]} ran over {timeout} s: {out[-2000:]}")
    return proc.returncode, time.time() - t0, out


def snapshot(work: Path) -> Path:
    """A copy of the package in ``work/snapshot`` that every run imports (other edits to the source tree
    while the harness runs must not change results between the reference and the resumed runs)."""
    snap = work / "snapshot"
    if not (snap / "lycb_jax").exists():
        shutil.copytree(ROOT / "lycb_jax", snap / "lycb_jax", ignore=shutil.ignore_patterns("__pycache__"))
    return snap


def base_env(work: Path, inp: Path, snap: Path | None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", LYCB_JAX_CACHE=str(work / "xla_cache"),
               PYTHONPATH=os.pathsep.join([str(inp), os.environ.get("PYTHONPATH", "")]), TQDM_DISABLE="1",
               LYCB_JAX_CHECKPOINTS=str(ROOT / "checkpoints"))
    if snap is not None:
        env["FI_SNAPSHOT"] = str(snap)
    for k in ("LYCB_JAX_FAULT", "LYCB_JAX_FAULT_LOG"):
        env.pop(k, None)
    return env


# -- comparing ----------------------------------------------------------------------------------------------

def _same(x, y) -> bool:
    """Attribute equality; NaN equals NaN (e.g. hop_distance_A of a run without Li)."""
    x, y = np.asarray(x), np.asarray(y)
    numeric = x.dtype.kind in "fc" and y.dtype.kind in "fc"
    return bool(np.array_equal(x, y, equal_nan=numeric))


def _h5_equal(a: Path, b: Path) -> str | None:
    from lycb_jax.md.trajectory import read_trajectory

    with read_trajectory(a) as fa, read_trajectory(b) as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)  # (append returns None: visit goes on)
        fb.visit(names_b.append)
        if sorted(names_a) != sorted(names_b):
            return f"{a.name}: different groups/datasets"
        for name in names_a:
            oa, ob = fa[name], fb[name]
            if hasattr(oa, "shape"):
                if oa.shape != ob.shape or not np.array_equal(oa[()], ob[()], equal_nan=True):
                    return f"{a.name}:{name} differs"
            for k in set(oa.attrs) | set(ob.attrs):
                if not _same(oa.attrs.get(k), ob.attrs.get(k)):
                    return f"{a.name}:{name} attribute {k} differs"
        for k in set(fa.attrs) | set(fb.attrs):
            if not _same(fa.attrs.get(k), fb.attrs.get(k)):
                return f"{a.name} attribute {k} differs"
    return None


def _bytes_equal(a: Path, b: Path) -> str | None:
    if not a.exists() or not b.exists():
        return f"{a.name} missing"
    return None if a.read_bytes() == b.read_bytes() else f"{a.name} differs"


def _manifest_core(path: Path) -> dict:
    m = json.loads((path / "manifest.json").read_text())["finetune"]
    hist = [{k: v for k, v in row.items() if k not in ("time_s", "compile_s")} for row in m["history"]]
    return {"best": m["best_epoch"], "test": m["test_metrics"], "history": hist}


def compare(cmd: str, ref: Path, out: Path) -> str | None:
    """None if the outputs of ``cmd`` in ``out`` equal those in ``ref`` (see COMPARED), else what differs."""
    try:
        if cmd == "md":
            return _h5_equal(ref / "trajectory.h5", out / "trajectory.h5")
        if cmd == "study":
            a = json.loads((ref / "transport.json").read_text())
            b = json.loads((out / "transport.json").read_text())
            return _h5_equal(ref / "md" / "trajectory.h5", out / "md" / "trajectory.h5") or (
                None if a == b else "transport.json differs")
        if cmd == "sweep":
            return (_h5_equal(ref / "md" / "trajectory.h5", out / "md" / "trajectory.h5")
                    or _bytes_equal(ref / "sweep.csv", out / "sweep.csv"))
        if cmd == "finetune":
            return _bytes_equal(ref / "params.msgpack", out / "params.msgpack") or (
                None if _manifest_core(ref) == _manifest_core(out) else "manifest history/metrics differ")
        if cmd == "structures":
            for f in sorted(ref.glob("*.csv")) + sorted(ref.glob("*.cif")):
                d = _bytes_equal(f, out / f.name)
                if d:
                    return d
            return None
        if cmd == "active-learn":
            for f in sorted(ref.glob("iter_*/*.extxyz")):
                d = _bytes_equal(f, out / f.relative_to(ref))
                if d:
                    return d
            last = sorted(ref.glob("iter_*/model"))[-1]
            return _bytes_equal(last / "params.msgpack", out / last.relative_to(ref) / "params.msgpack")
    except (OSError, KeyError, ValueError) as err:
        return f"cannot compare: {type(err).__name__}: {err}"
    raise ValueError(cmd)


# -- the experiments ----------------------------------------------------------------------------------------

def reference(cmd, inp, work, env):
    ref = work / cmd / "reference"
    log = work / cmd / "reference_points.log"
    done = work / cmd / "reference.json"
    if done.exists():
        return ref, json.loads(done.read_text())
    shutil.rmtree(ref, ignore_errors=True)
    log.unlink(missing_ok=True)
    rc, secs, out = run(command_args(cmd, inp, ref), dict(env, LYCB_JAX_FAULT_LOG=str(log)), work)
    if rc != 0:
        raise RuntimeError(f"{cmd}: the uninterrupted run failed (rc {rc}):\n{out}")
    points = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        name, n = line.rsplit(" ", 1)
        points[name] = max(points.get(name, 0), int(n))
    info = {"seconds": secs, "points": points}
    done.write_text(json.dumps(info))
    return ref, info


def kill_chains(cmd, inp, work, env, ref, info, n_kills, rng, log):
    """Chains of killed-and-resumed runs until ``n_kills`` kills; returns the counts and failures."""
    points = sorted(info["points"])
    res = {"kills": 0, "named_kills": 0, "timed_kills": 0, "resumes": 0, "chains": 0, "chains_equal": 0,
           "not_reached": 0, "failures": []}
    chain, timed_hi = 0, 0.6 * info["seconds"]  # upper bound of random kill times, lowered when one comes too late
    while res["kills"] < n_kills:
        chain += 1
        out = work / cmd / f"chain_{chain:02d}"
        shutil.rmtree(out, ignore_errors=True)
        first = True
        while True:
            args = command_args(cmd, inp, out) + (["--resume"] if resumable(cmd, out) and not first else [])
            k = res["kills"]
            kill_env, kill_after, what = dict(env), None, "none (finish)"
            if k < n_kills:
                if k % 3 == 2:  # a random wall-clock kill from outside
                    kill_after = rng.uniform(3.0, max(6.0, timed_hi))
                    what = f"SIGKILL at {kill_after:.1f} s"
                else:  # a named point, with a count reached in the uninterrupted run
                    name = points[(k - k // 3) % len(points)] if k % 2 else rng.choice(points)
                    n = rng.randint(1, max(1, min(3, info["points"][name])))
                    kill_env["LYCB_JAX_FAULT"] = f"{name}:{n}"
                    what = f"{name}:{n}"
            rc, secs, text = run(args, kill_env, work, kill_after)
            if not first:
                res["resumes"] += 1
            first = False
            if rc == -signal.SIGKILL:
                res["kills"] += 1
                res["timed_kills" if kill_after is not None else "named_kills"] += 1
                log(f"  {cmd} chain {chain}: killed at {what} after {secs:.0f} s")
                continue
            if rc != 0:
                res["failures"].append({"chain": chain, "kill": what, "rc": rc, "output": text[-2500:]})
                log(f"  {cmd} chain {chain}: run FAILED (rc {rc}) after kill point {what}:\n{text[-1500:]}")
                break
            if what != "none (finish)":
                res["not_reached"] += 1
                if kill_after is not None:
                    timed_hi = 0.7 * secs
            res["chains"] += 1
            diff = compare(cmd, ref, out)
            res["chains_equal"] += diff is None
            log(f"  {cmd} chain {chain}: finished" + (f" ({what} not reached)" if what != "none (finish)" else "")
                + ("; equal to the reference" if diff is None else f"; DIFFERS: {diff}"))
            if diff:
                res["failures"].append({"chain": chain, "differs": diff})
            break
    return res


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # flip one byte in the middle
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def _kill_after_checkpoint(cmd, inp, env, work, out, spec):
    """Run ``cmd`` into ``out`` until a checkpoint has been written twice, killed at ``spec``."""
    rc, _, text = run(command_args(cmd, inp, out), dict(env, LYCB_JAX_FAULT=spec), work)
    if rc != -signal.SIGKILL:
        raise RuntimeError(f"{cmd}: expected a kill at {spec}, got rc {rc}: {text[-1500:]}")


CKPT_POINT = {"md": "md_checkpoint.renamed:3", "study": "md_checkpoint.renamed:3", "sweep": "md_checkpoint.renamed:3",
              "finetune": "train_state.renamed:3", "active-learn": "train_state.renamed:3"}


def corruption(cmd, inp, work, env, ref, log):
    """Truncate / flip a byte of the newest checkpoint; then damage both generations."""
    res = {"corruptions": 0, "detected": 0, "equal_after": 0, "both_damaged_clear_error": None, "notes": []}
    if cmd not in CKPT_POINT:
        res["notes"].append("no checkpoint (the command is one batched relaxation)")
        return res
    for how in ("truncate", "flip"):
        out = work / cmd / f"corrupt_{how}"
        shutil.rmtree(out, ignore_errors=True)
        _kill_after_checkpoint(cmd, inp, env, work, out, CKPT_POINT[cmd])
        ck = checkpoint_of(cmd, out)
        _damage(ck, how)
        res["corruptions"] += 1
        rc, _, text = run(command_args(cmd, inp, out) + ["--resume"], env, work)
        detected = "WARNING" in text and ck.name in text and "damaged" in text
        res["detected"] += detected
        diff = compare(cmd, ref, out) if rc == 0 else f"rc {rc}"
        res["equal_after"] += diff is None
        log(f"  {cmd}: {how} {ck.relative_to(out)}: detected={detected}, resumed rc {rc}, "
            f"{'equal to the reference' if diff is None else 'DIFFERS: ' + diff}")
        if not detected or diff:
            res["notes"].append(f"{how}: {text[-1500:]}")
    out = work / cmd / "corrupt_both"
    shutil.rmtree(out, ignore_errors=True)
    _kill_after_checkpoint(cmd, inp, env, work, out, CKPT_POINT[cmd])
    ck = checkpoint_of(cmd, out)
    prev = ck.with_name(f"{ck.stem}.prev{ck.suffix}")
    _damage(ck, "truncate")
    _damage(prev, "flip")
    rc, _, text = run(command_args(cmd, inp, out) + ["--resume"], env, work)
    clear = rc not in (0, -signal.SIGKILL) and "Traceback" not in text and "no good checkpoint" in text
    res["both_damaged_clear_error"] = clear
    last = [ln for ln in text.splitlines() if ln.strip()][-1:] or [""]
    log(f"  {cmd}: both generations damaged: rc {rc}, clear one-line error: {clear}: {last[0][:300]}")
    if not clear:
        res["notes"].append(f"both damaged: {text[-1500:]}")
    return res


def _make_readonly(folder: Path) -> callable:
    """Make ``folder`` unwritable (no new files, no renames); returns the undo."""
    if os.geteuid() == 0:  # root ignores permission bits
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    return lambda: folder.chmod(mode)


def write_failures(cmd, inp, work, env, ref, log):
    """Read-only folder and full disk during a resumed run: one clear message, checkpoint intact."""
    res = {}
    if cmd not in CKPT_POINT:
        return {"read-only": "n/a", "full disk": "n/a"}
    for kind in ("read-only", "full disk"):
        out = work / cmd / f"writefail_{kind.replace(' ', '_')}"
        shutil.rmtree(out, ignore_errors=True)
        _kill_after_checkpoint(cmd, inp, env, work, out, CKPT_POINT[cmd])
        ck = checkpoint_of(cmd, out)
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ck.parent.glob(ck.stem + "*.npz")}
        if kind == "read-only":
            undo = _make_readonly(ck.parent)
        else:
            tmp = ck.with_name(f".{ck.name}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink("/dev/full", tmp)  # the next write of this checkpoint gets ENOSPC from the kernel
            undo = lambda tmp=tmp: tmp.unlink(missing_ok=True)  # noqa: E731
        try:
            rc, _, text = run(command_args(cmd, inp, out) + ["--resume"], env, work)
        finally:
            undo()
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ck.parent.glob(ck.stem + "*.npz")}
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        msg = lines[-1] if lines else ""
        names_folder = str(ck.parent) in msg
        one_line = "Traceback" not in text
        intact = before == after
        rc2, _, text2 = run(command_args(cmd, inp, out) + ["--resume"], env, work)
        diff = compare(cmd, ref, out) if rc2 == 0 else f"rc {rc2}: {text2[-800:]}"
        ok = rc not in (0, -signal.SIGKILL) and names_folder and one_line and intact and diff is None
        res[kind] = {"stopped": rc not in (0, -signal.SIGKILL), "rc": rc, "names_folder": names_folder,
                     "no_traceback": one_line, "checkpoint_intact": intact, "resume_equal": diff is None,
                     "ok": ok, "message": msg[:400]}
        log(f"  {cmd}: {kind}: rc {rc}, message names the folder: {names_folder}, no traceback: {one_line}, "
            f"checkpoint intact: {intact}, resumed afterwards equal: {diff is None}\n    {msg[:400]}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="fault_injection_work", help="scratch folder (kept; a reference run is reused)")
    ap.add_argument("--commands", nargs="+", default=["md", "finetune", "active-learn", "structures", "study", "sweep"])
    ap.add_argument("--kills", type=int, default=20, help="kills per command")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-corruption", action="store_true")
    ap.add_argument("--skip-write-failures", action="store_true")
    ap.add_argument("--live", action="store_true",
                    help="import the source tree, not a snapshot of it taken at the start")
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    inp = prepare(work)["inp"]
    env = base_env(work, inp, None if a.live else snapshot(work))
    rng = random.Random(a.seed)
    logf = open(work / "log.txt", "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    rows = []
    for cmd in a.commands:
        t0 = time.time()
        log(f"== {cmd}: {' '.join(command_args(cmd, Path('inputs'), Path('OUT')))}")
        ref, info = reference(cmd, inp, work, env)
        log(f"  reference: {info['seconds']:.0f} s, fault points {info['points']}")
        res = {"command": cmd, "compared": COMPARED[cmd]}
        res.update(kill_chains(cmd, inp, work, env, ref, info, a.kills, rng, log))
        if not a.skip_corruption:
            res.update(corruption(cmd, inp, work, env, ref, log))
            if not a.skip_write_failures:
                res["write_failures"] = write_failures(cmd, inp, work, env, ref, log)
        res["seconds"] = time.time() - t0
        with open(work / "results.jsonl", "a") as fh:
            fh.write(json.dumps(res, default=str) + "\n")
        rows.append(res)
        print_table(rows)
    return 0


def print_table(rows) -> None:
    print(f"\n{'command':13s} {'kills':>5s} {'named':>5s} {'timed':>5s} {'resumes':>7s} {'chains':>6s} "
          f"{'equal':>5s} {'failed':>6s} {'corrupt':>7s} {'detected':>8s} {'eq.after':>8s} {'both bad':>8s} "
          f"{'read-only':>9s} {'disk full':>9s}")
    for r in rows:
        wf = r.get("write_failures", {})
        fmt = lambda w: "n/a" if not isinstance(w, dict) else ("ok" if w["ok"] else "FAIL")  # noqa: E731
        print(f"{r['command']:13s} {r['kills']:5d} {r['named_kills']:5d} {r['timed_kills']:5d} {r['resumes']:7d} "
              f"{r['chains']:6d} {r['chains_equal']:5d} {len(r['failures']):6d} {r.get('corruptions', 0):7d} "
              f"{r.get('detected', 0):8d} {r.get('equal_after', 0):8d} {str(r.get('both_damaged_clear_error')):>8s} "
              f"{fmt(wf.get('read-only')):>9s} {fmt(wf.get('full disk')):>9s}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
