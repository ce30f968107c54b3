"""Metrics of a model on packed data: loss, MAE and RMSE of energy (meV/atom), forces (meV/A),
stress (GPa) and magmoms (muB), summed over fixed-shape batches."""

from __future__ import annotations

import math

import numpy as np

from lycb_jax.models import Model
from lycb_jax.train.config import FinetuneConfig
from lycb_jax.train.data import Dataset
from lycb_jax.train.pack import PackedBucket, bucket_limit, choose_buckets, iter_batches, pack_dataset
from lycb_jax.train.programs import loss_key, make_eval_step

_SCALES = {"e": ("energy", "meV/atom", 1e3), "f": ("force", "meV/A", 1e3), "s": ("stress", "GPa", 1.0),
           "m": ("magmom", "muB", 1.0)}  # error sums (eV/atom, eV/A, GPa, muB) -> reported name, unit, factor


def summarize(stats: dict, loss_sum: float, n_batches: int) -> dict:
    """Mean loss and MAE/RMSE from summed errors (``stats``: {e, f, s, m: [sum|d|, sum d^2, count]}):
    energy meV/atom, force meV/A, stress GPa, magmom muB; a target without labels is left out."""
    out = {"loss": loss_sum / max(n_batches, 1)}
    for k, (name, unit, c) in _SCALES.items():
        sa, ss, n = (float(x) for x in stats[k])
        if n > 0:
            out[f"{name}_mae_{unit}"] = c * sa / n
            out[f"{name}_rmse_{unit}"] = c * math.sqrt(ss / n)
    return out


def accumulate(total: dict | None, stats) -> dict:
    """``total`` + ``stats`` (error sums of one batch) in float64 on the host; None: a first batch."""
    stats = {k: np.asarray(v, np.float64) for k, v in stats.items()}
    return stats if total is None else {k: total[k] + stats[k] for k in total}


def format_metrics(m: dict) -> str:
    """One line of MAEs: "E <meV/atom> F <meV/A> S <GPa> M <muB>" (those present)."""
    keys = [("energy_mae_meV/atom", "E"), ("force_mae_meV/A", "F"), ("stress_mae_GPa", "S"), ("magmom_mae_muB", "M")]
    return " ".join(f"{short} {m[k]:.4g}" for k, short in keys if k in m)


def predict_energies_packed(eval_step, params, packed: list[PackedBucket], *, batch_size: int, n: int) -> np.ndarray:
    """Predicted total energies (eV) of the packed structures, at their dataset positions in an
    array of length ``n`` (NaN elsewhere), from the already compiled eval programs
    (``eval_step(params, batch, capacity)``)."""
    out = np.full(n, np.nan)
    for pb in packed:
        for k, (cap, batch) in enumerate(iter_batches([pb], batch_size)):  # no rng: in pb.index order
            _, _, e = eval_step(params, batch, cap)
            sel = pb.index[k * batch_size:(k + 1) * batch_size]
            out[sel] = np.asarray(e, np.float64)[:len(sel)]
    return out


def evaluate_packed(eval_step, params, packed: list[PackedBucket], *, batch_size: int) -> dict:
    """Loss and metrics (:func:`summarize`) over packed buckets; ``eval_step(params, batch, capacity)``."""
    total, loss_sum, nb = None, 0.0, 0
    for cap, batch in iter_batches(packed, batch_size):
        loss, stats, _ = eval_step(params, batch, cap)
        total, loss_sum, nb = accumulate(total, stats), loss_sum + float(loss), nb + 1
    return summarize(total, loss_sum, nb) if nb else {}


def evaluate(model: Model, ds: Dataset, config: FinetuneConfig | None = None) -> dict:
    """Loss and MAE/RMSE (meV/atom, meV/A, GPa, muB) of ``model`` on a dataset."""
    cfg = config or FinetuneConfig()
    eval_step = make_eval_step(model.module, loss_key(cfg))
    packed = pack_dataset(ds, choose_buckets([len(s) for s in ds.systems], bucket_limit(cfg)), model.cutoffs)
    return evaluate_packed(lambda p, batch, _cap: eval_step(p, batch), model.params, packed, batch_size=cfg.batch_size)
