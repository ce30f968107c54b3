"""The active-learning loop end to end on the CPU with a cheap model and labeller (Lennard-Jones argon,
labels from ASE's LennardJones with another epsilon): two temperature iterations, and SIGKILL at
several points followed by a restart ends with the same model as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parents[1]  # tests/: potentials.py
SCRIPT = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import potentials
potentials.register()
from lycb_jax.active import ActiveLearningConfig, active_learn
from lycb_jax.active.loop import sampling_protocol
from lycb_jax.models import save_checkpoint

out = sys.argv[1]
import os
import jax
from lycb_jax.runtime.cache import enable_compilation_cache
enable_compilation_cache(sys.argv[2])  # shared by the test's runs: a resumed run loads what the first compiled,
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # as the CLI's default cache does
if not os.path.exists(out + "/start/manifest.json"):
    save_checkpoint(out + "/start", potentials.lj_model())
cfg = ActiveLearningConfig(t_start_K=40, t_max_K=80, dt_K=40, per_iteration=8,
                           md=sampling_protocol(dt_fs=5.0, heat_ps=0.1, npt_ps=0.5, npt_average_ps=0.25,
                                                production_ps=0.5, save_every_fs=25.0, pressure_bar=1.0),
                           finetune=dict(epochs=40, batch_size=2, learning_rate=1e-3, val_fraction=0.25,
                                         test_fraction=0.25, refit_composition=False))
records = active_learn({{"a": potentials.argon(2, 5.30, 0), "b": potentials.argon(2, 5.45, 1)}},
                       potentials.ase_lj_labeller(), out + "/al", config=cfg, model=out + "/start", verbose=False,
                       resume=True)
print("DONE", records[-1]["model"])
"""


def run(out: Path, kill_when=None, timeout=900):
    """Run the loop in a subprocess; with ``kill_when`` (a path), SIGKILL it as soon as that path exists."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(out.parent / "xla")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    t0 = time.time()
    while proc.poll() is None:
        if kill_when is not None and Path(kill_when).exists():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None
        if time.time() - t0 > timeout:
            proc.kill()
            raise TimeoutError(proc.stdout.read()[-3000:])
        time.sleep(0.005)
    output = proc.stdout.read()
    assert proc.returncode == 0, output[-3000:]
    return output


def final_params(out: Path):
    from flax import serialization

    model = out / "al" / "iter_01_T80K" / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    return serialization.msgpack_restore((model / "params.msgpack").read_bytes()), manifest


@pytest.mark.slow
def test_loop_runs_and_resumes_after_kills_to_the_same_model(tmp_path):
    ref = tmp_path / "ref"
    run(ref)
    params, manifest = final_params(ref)
    assert manifest["active_learning"]["temperature_K"] == 80
    assert manifest["finetune"]["n_structures"] == 16  # 8 per iteration, 4 per parent, accumulated
    eps = float(params["epsilon"])
    assert eps != pytest.approx(0.0104, abs=1e-5)  # it trained
    # the labelled data and the two iterations' checkpoints exist, the second started from the first
    assert json.loads((ref / "al" / "iter_01_T80K" / "model" / "manifest.json").read_text())["active_learning"][
        "parent_model"].endswith("iter_00_T40K/model")
    killed = tmp_path / "killed"
    kill_points = [killed / "al" / "iter_00_T40K" / "md_a" / "checkpoint.npz",  # during the first MD
                   killed / "al" / "iter_00_T40K" / "candidates.extxyz",  # before labelling
                   killed / "al" / "iter_00_T40K" / "model" / "train_state.npz",  # during fine-tuning
                   killed / "al" / "iter_01_T80K" / "md_b" / "trajectory.h5"]  # in the second iteration's MD
    for point in kill_points:
        assert run(killed, kill_when=point) is None, f"the run finished before {point} appeared"
    run(killed)
    params2, _ = final_params(killed)
    assert float(params2["epsilon"]) == eps


def test_dispersion_acts_in_the_sampling_md_only(tmp_path, monkeypatch):
    """--dispersion: the sampling MD gets model + D3; a dispersion checkpoint as the start is refused (its
    fine-tuning would need weights of its own); the run's settings record the dispersion."""
    sys.path.insert(0, str(HERE))
    import potentials

    import lycb_jax.active.loop as loop
    from lycb_jax.active import ActiveLearningConfig, active_learn
    from lycb_jax.io.errors import InputError
    from lycb_jax.models import save_checkpoint

    potentials.register()
    save_checkpoint(tmp_path / "start", potentials.lj_model())
    seen = []

    class Sampled(Exception):
        pass

    def fake_sample(model, *args, **kwargs):
        seen.append(model.name)
        raise Sampled

    monkeypatch.setattr(loop, "sample_md", fake_sample)
    parents = {"a": potentials.argon(2, 5.30, 0)}
    with pytest.raises(Sampled):
        active_learn(parents, potentials.ase_lj_labeller(), tmp_path / "al", config=ActiveLearningConfig(),
                     model=str(tmp_path / "start"), verbose=False, dispersion="d3bj")
    assert seen and seen[0].endswith("+d3bj")
    assert json.loads((tmp_path / "al" / "settings.json").read_text())["sampling_dispersion"] == "d3bj"
    with pytest.raises(InputError, match="start active learning from chgnet-0.3.0-lycb-pbe with dispersion"):
        active_learn(parents, potentials.ase_lj_labeller(), tmp_path / "al2", config=ActiveLearningConfig(),
                     model="chgnet-0.3.0-lycb-pbe-d3", verbose=False)


def test_cli_config_md_table_overrides_the_loop_defaults(tmp_path, monkeypatch):
    """`active-learn --config`: an [md] table changes the named fields of the loop's sampling MD and keeps its
    other defaults (2 fs, 1 ps heating, 6 ps NpT averaged over 4 ps, 10 ps production), not Protocol's."""
    import lycb_jax.active
    from lycb_jax.cli import main

    seen = []
    monkeypatch.setattr(lycb_jax.active, "active_learn", lambda parents, labeller, out, *, config,
                        **_: seen.append(config) or [])
    config = tmp_path / "al.toml"
    config.write_text("t_start_K = 300.0\n[md]\nnpt_ps = 8.0\nbarostat = \"aniso\"\n[finetune]\nepochs = 3\n")
    cif = Path(__file__).resolve().parents[2] / "lycb_jax" / "data" / "Li3YCl6_P-3m1_ordered30.cif"
    assert main(["active-learn", str(cif), "--config", str(config), "--labeller", "ase.calculators.lj:LennardJones",
                 "--out", str(tmp_path / "al")]) == 0
    (cfg,) = seen
    assert (cfg.t_start_K, cfg.t_max_K, cfg.finetune) == (300.0, 800.0, {"epochs": 3})
    md = cfg.md
    assert (md.npt_ps, md.barostat) == (8.0, "aniso")
    assert (md.dt_fs, md.heat_ps, md.nvt_ps, md.npt_average_ps, md.production_ps, md.save_every_fs,
            md.pressure_bar, md.checkpoint_every_ps, md.seed) == (2.0, 1.0, 0.0, 4.0, 10.0, 50.0, 1.0, 1.0, 0)
