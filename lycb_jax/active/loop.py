"""The paper's iterative fine-tuning (its Fig. 6): for T = t_start, t_start + dT, ..., t_max:

1. MD of every parent structure with the current model at T (the :class:`lycb_jax.md.Protocol` ``md`` of
   :class:`ActiveLearningConfig`): heat, NpT to find the volume, then NVT at the NpT-averaged cell
   (``lycb_jax.md.Simulation``);
2. farthest-point sampling of the NVT frames on the mean squared difference of atom positions,
   ``per_iteration`` structures split equally over the parents;
3. labels from a labeller (DFT), cached in ``labels.db`` by structure and settings;
4. fine-tuning on every label so far, starting from the previous iteration's model;
5. T += dT.

Everything an iteration makes lives in ``out/iter_KK_TnnnK/`` and is written atomically
(:mod:`lycb_jax.io.durable`; the sampled and labelled structures with a ``.sha256`` beside them, checked
before use: a damaged file is made again); a killed run started again with the same arguments
continues where it stopped (MD from its checkpoint, labels from the cache, fine-tuning from its train
state) and ends with the same model.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from ase import Atoms
from ase.io import read, write

from lycb_jax.active.labellers import ASELabeller, label_structures
from lycb_jax.active.sampling import farthest_point_sampling, position_features
from lycb_jax.io.durable import atomic_write, verified, write_with_digest
from lycb_jax.models.paths import DEFAULT_MODEL

if TYPE_CHECKING:  # lycb_jax.md imports JAX; the labellers of this package must import without it (the DFT kit)
    from lycb_jax.md.protocol import Protocol


def sampling_protocol(**changes) -> Protocol:
    """The loop's sampling MD with ``changes`` (fields of :class:`lycb_jax.md.Protocol`): 2 fs steps,
    heating from 100 K over 1 ps, 6 ps NpT at 1 bar with the cell averaged over its last 4 ps, then 10 ps
    of NVT production saved every 50 fs; a checkpoint every ps. Each iteration sets the temperature."""
    from lycb_jax.md.protocol import Protocol

    return Protocol(**{"dt_fs": 2.0, "heat_ps": 1.0, "nvt_ps": 0.0, "npt_ps": 6.0, "npt_average_ps": 4.0,
                       "production_ps": 10.0, "checkpoint_every_ps": 1.0, **changes})


@dataclasses.dataclass
class ActiveLearningConfig:
    """Settings of the loop: the temperatures ``t_start_K``, ``t_start_K + dt_K``, ... up to ``t_max_K``
    (K); ``per_iteration`` structures labelled per iteration, split over the parents; ``md`` the sampling
    MD (:func:`sampling_protocol`; its ``temperatures_K`` are not used, each iteration runs at its own,
    and its ``seed`` also seeds the fine-tuning); ``finetune`` overrides of
    :class:`lycb_jax.train.FinetuneConfig` (epochs, learning_rate, freeze, ...).

    ``md.barostat``: DFT-sized cells of 20-30 atoms fluctuate so much in shape under "tri" that the
    averaged cell can be far from the last one; "aniso" (x, y, z scaled separately) has no shear."""

    t_start_K: float = 200.0
    t_max_K: float = 800.0
    dt_K: float = 200.0
    per_iteration: int = 40
    md: Protocol = dataclasses.field(default_factory=sampling_protocol)
    finetune: dict = dataclasses.field(default_factory=dict)

    # keys of a settings file written before the MD settings moved into ``md`` -> where they are now
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "md_dt_fs": "md.dt_fs", "sample_ps": "md.production_ps",
        **{k: f"md.{k}" for k in ("heat_ps", "npt_ps", "npt_average_ps", "save_every_fs", "pressure_bar",
                                  "barostat", "seed")}}

    def temperatures(self) -> list[float]:
        if self.dt_K <= 0 or self.t_max_K < self.t_start_K:
            raise ValueError(f"need dt_K > 0 and t_max_K >= t_start_K (got {self.t_start_K}, {self.t_max_K}, {self.dt_K})")
        n = int(np.floor((self.t_max_K - self.t_start_K) / self.dt_K + 1e-9)) + 1
        return [self.t_start_K + k * self.dt_K for k in range(n)]


def _atomic_write(path: Path, frames: list[Atoms], point: str) -> None:
    """``frames`` as extxyz, atomically, with ``<path>.sha256``."""
    def write_frames(fh):
        text = io.StringIO()
        write(text, frames, format="extxyz")
        fh.write(text.getvalue().encode())

    write_with_digest(path, write_frames, point)


def _write_json(path: Path, obj, point: str) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1, default=str).encode()), point)


def sample_md(model, parent, *, name: str, temperature_K: float, md: Protocol, out: Path, n: int) -> list[Atoms]:
    """Steps 1-2 for one parent: the MD ``md`` at ``temperature_K`` (K; heating from ``md.start_K`` or
    ``temperature_K`` if lower, chunks no longer than the production) into ``out/md_<name>``, then ``n``
    frames by FPS."""
    from lycb_jax.md.simulation import Simulation
    from lycb_jax.md.trajectory import read_trajectory

    proto = dataclasses.replace(md, temperatures_K=(temperature_K,), start_K=min(md.start_K, temperature_K),
                                chunk_ps=min(md.chunk_ps, md.production_ps))
    md_dir = out / f"md_{name}"
    Simulation(model, parent, proto, md_dir, resume=True, progress=False).run()
    with read_trajectory(md_dir / "trajectory.h5") as f:
        pos, cells = f["production"]["positions"][0], f["production"]["cell"][0]
        numbers = np.atleast_2d(f.attrs["numbers"])[0]
    pick = farthest_point_sampling(position_features(pos, cells), n)
    frames = []
    for k in pick:
        atoms = Atoms(numbers=numbers, positions=pos[k], cell=cells[k], pbc=True)
        atoms.wrap()
        atoms.info.update(parent=name, T_K=float(temperature_K), md_frame=int(k))
        frames.append(atoms)
    return frames


def _check_or_write_settings(out: Path, settings: dict, resume: bool) -> None:
    """Write ``out/settings.json``; refuse to mix a new run into a folder that holds another one."""
    path = out / "settings.json"
    settings = json.loads(json.dumps(settings, default=str))
    if path.exists():
        if not resume:
            raise FileExistsError(f"{out} holds an active-learning run: continue it with resume (--resume) or "
                                  "choose another output folder")
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out} holds a run with other settings ({', '.join(diff)} differ); use another folder")
        return
    _write_json(path, settings, "active_settings")


def _record_iteration(model_dir: Path, k: int, temperature: float, parent: str, labeller: ASELabeller) -> None:
    """Add the loop's provenance to the fine-tuned checkpoint's manifest (atomically; idempotent)."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    if manifest.get("active_learning", {}).get("iteration") == k:  # (a parent's record is inherited: replace it)
        return
    manifest["active_learning"] = {"iteration": k, "temperature_K": temperature, "parent_model": parent,
                                   "labeller": labeller.settings}
    atomic_write(model_dir / "manifest.json",
                 lambda fh: fh.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()),
                 "model_manifest")


def active_learn(parents: dict[str, object], labeller: ASELabeller, out: str | Path, *,
                 config: ActiveLearningConfig | None = None, model: str = DEFAULT_MODEL, workers: int = 1,
                 verbose: bool = True, resume: bool = False, dispersion: str | None = None) -> list[dict]:
    """Run the loop; ``parents``: name -> structure (pymatgen or ASE). With ``resume`` an existing
    ``out`` is continued (it must hold a run with the same settings), else it must not hold one.
    ``dispersion`` (e.g. "d3bj") is added to the model of the sampling MD only, so that it explores the
    density the corrected model runs at; the labels and the fine-tuning stay DFT alone (D3 is added at
    inference, never learnt). Returns one record per iteration (T, structures, model folder, test
    metrics). The last model is ``out/iter_KK_T<T_max>K/model``, loadable with :func:`lycb_jax.load_model`."""
    from lycb_jax.io.errors import InputError
    from lycb_jax.models import load_model
    from lycb_jax.models.paths import checkpoint_dir, dispersion_alias
    from lycb_jax.train import FinetuneConfig, finetune
    from lycb_jax.train.state import has_train_state

    cfg = config or ActiveLearningConfig()
    out = Path(out)
    alias = dispersion_alias(Path(model)) or dispersion_alias(checkpoint_dir() / str(model))
    if alias is not None:  # fine-tuning needs weights: start from the base, sample with its dispersion
        raise InputError(f"{model} is {alias['base_checkpoint']} + {alias['dispersion']}; start active learning from "
                         f"{alias['base_checkpoint']} with dispersion {alias['dispersion']!r} (--dispersion)")
    settings = {"config": dataclasses.asdict(cfg), "parents": sorted(parents), "model": str(model),
                "labeller": labeller.settings}
    if dispersion is not None:  # recorded only when used, so runs written before keep resuming
        settings["sampling_dispersion"] = dispersion
    _check_or_write_settings(out, settings, resume)
    current, records, labelled_files = model, [], []
    per_parent = max(1, cfg.per_iteration // len(parents))
    for k, temperature in enumerate(cfg.temperatures()):
        it = out / f"iter_{k:02d}_T{temperature:.0f}K"
        it.mkdir(exist_ok=True)
        model_dir = it / "model"
        cand = it / "candidates.extxyz"
        if not verified(cand):
            m = load_model(current, dispersion=dispersion)
            frames = [a for name, s in parents.items()
                      for a in sample_md(m, s, name=name, temperature_K=temperature, md=cfg.md, out=it, n=per_parent)]
            _atomic_write(cand, frames, "active_candidates")
        labelled = it / "labelled.extxyz"
        if not verified(labelled):
            if verbose:
                print(f"iteration {k} (T = {temperature:.0f} K): labelling {len(read(cand, ':'))} structures", flush=True)
            _atomic_write(labelled, label_structures(read(cand, ":"), labeller, out / "labels.db", workers=workers,
                                                     progress=verbose),
                          "active_labelled")
        labelled_files.append(labelled)
        if not (model_dir / "manifest.json").exists() or has_train_state(model_dir):
            data = [a for f in labelled_files for a in read(f, ":")]
            ft = FinetuneConfig(parent=str(current), seed=cfg.md.seed, **cfg.finetune)
            finetune(data, ft, out=model_dir, verbose=verbose, resume=has_train_state(model_dir))
        _record_iteration(model_dir, k, temperature, str(current), labeller)
        manifest = json.loads((model_dir / "manifest.json").read_text())
        records.append({"iteration": k, "temperature_K": temperature, "model": str(model_dir),
                        "n_structures": manifest.get("finetune", {}).get("n_structures"),
                        "test_metrics": manifest.get("finetune", {}).get("test_metrics")})
        current = str(model_dir)
    _write_json(out / "iterations.json", records, "active_iterations")
    return records
