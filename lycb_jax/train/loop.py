"""The fine-tuning run, :func:`finetune`: split, pack, compile, optionally refit the composition
model, train epoch by epoch with validation, early stopping and a resumable state, test, and write
a checkpoint."""

from __future__ import annotations

import dataclasses
import datetime
import math
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lycb_jax.models import LayerGroups, Model, load_model, save_checkpoint
from lycb_jax.models.groups import param_labels, resolve_groups
from lycb_jax.train.config import FinetuneConfig
from lycb_jax.train.data import Dataset, as_dataset
from lycb_jax.train.metrics import accumulate, evaluate_packed, format_metrics, predict_energies_packed, summarize
from lycb_jax.train.optim import learning_rates, make_optimizer
from lycb_jax.train.pack import PackedBucket, bucket_limit, choose_buckets, iter_batches, pack_dataset, select_packed
from lycb_jax.train.programs import compile_programs, make_steps
from lycb_jax.train.refit import refit_composition
from lycb_jax.train.state import (TRAIN_STATE, has_train_state, load_train_state, remove_train_state,
                                  save_train_state)


@dataclasses.dataclass
class FinetuneResult:
    """Fine-tuned model, per-epoch history, test metrics, checkpoint folder and split indices."""

    model: Model
    history: list[dict]
    test_metrics: dict
    path: Path | None
    split: dict


@dataclasses.dataclass
class _Run:
    """What a run trains on: config, parent model and its layer groups, data and its split (dataset
    positions), output folder, packed buckets per split, optimiser and per-step learning rates."""

    cfg: FinetuneConfig
    parent: Model
    groups: LayerGroups
    ds: Dataset
    train_set: Dataset
    split: dict[str, list]
    sha: str
    name: str
    path: Path | None
    buckets: list[int]
    packs: dict[str, list[PackedBucket]]
    labels: Any
    tx: optax.GradientTransformation
    steps_per_epoch: int
    lr: np.ndarray

    @property
    def state_meta(self) -> dict:
        """What a resumed run must share with the saved one."""
        return {"dataset_sha256": self.sha, "hyperparameters": dataclasses.asdict(self.cfg)}


@dataclasses.dataclass
class _Programs:
    """Compiled programs per bucket capacity, and the seconds it took to compile them."""

    train: dict
    eval: dict
    compile_s: float

    def run_eval(self, params, batch, cap):  # the compiled eval program of the batch's bucket
        return self.eval[cap](params, batch)


@dataclasses.dataclass
class _Progress:
    """The training state: parameters, optimiser state, history, best (val loss, epoch, host
    params), shuffling RNG, epochs done and seconds trained (both nonzero after a resume)."""

    params: Any
    opt_state: Any
    history: list[dict]
    best: tuple
    rng: np.random.Generator
    done: int = 0
    elapsed: float = 0.0


def finetune(data: Dataset | str | Path | Sequence, config: FinetuneConfig | None = None,
             out: str | Path | None = None, *, verbose: bool = True, resume: bool = False,
             **overrides) -> FinetuneResult:
    """Fine-tune ``config.parent`` on ``data`` (a Dataset, file path(s) or ASE Atoms list).

    Splits by ``config.seed``, optionally refits the composition model on the training split,
    trains with frozen groups, evaluates every epoch (train metrics are running averages over
    the epoch's batches, as CHGNet reports them), stops early after ``patience`` epochs
    without a lower validation loss, evaluates the test split and writes a checkpoint folder to
    ``out`` (default ``./finetune_out/<parent>-ft-<dataset sha[:8]>`` in the working directory, never next to
    the package; ``out=False``: none).
    ``overrides`` replace config fields (``finetune(path, epochs=10, freeze=["embeddings"])``).
    After every epoch the training state goes to ``<out>/train_state.npz``; ``resume=True``
    continues a killed run from it (same data and config), with the same result as an
    uninterrupted run.
    """
    cfg = dataclasses.replace(config or FinetuneConfig(), **overrides)
    ds = as_dataset(data, cfg.energy_key)
    parent = load_model(cfg.parent)
    for s in ds.systems:
        parent.check_elements(s.numbers)
    run = _setup(ds, cfg.with_freeze_resolved(parent.module.layer_groups().default_frozen), parent, out, resume)
    params = jax.tree.map(jnp.array, parent.params)  # own copy (buffers are donated)
    opt_state = run.tx.init(params)
    initial = run.cfg.evaluate_initial and not resume  # a resumed run takes its history from the saved state
    progs = _compile(run, params, opt_state, initial, verbose)
    refit_info = _refit(run, progs, params, verbose)
    n_train = sum(int(np.size(v)) for v, lab in zip(jax.tree.leaves(params), jax.tree.leaves(run.labels))
                  if lab == "trainable")
    if verbose:
        print(f"{len(run.split['train'])}/{len(run.split['val'])}/{len(run.split['test'])} train/val/test structures, "
              f"buckets {run.buckets} atoms, batch {run.cfg.batch_size}, {run.steps_per_epoch} steps/epoch, "
              f"{n_train:,} trainable parameters; {len(progs.train) + len(progs.eval)} programs compiled in "
              f"{progs.compile_s:.1f} s")
    prog = _start(run, progs, params, opt_state, initial, resume, verbose)
    last_epoch = _train(run, progs, prog, verbose)
    return _finish(run, progs, prog, last_epoch, n_train, refit_info, verbose)


def _setup(ds: Dataset, cfg: FinetuneConfig, parent: Model, out, resume: bool) -> _Run:
    """Split, output folder (checked for a state to resume), packed buckets, labels and optimiser."""
    train, _, _, split = ds.split(cfg.val_fraction, cfg.test_fraction, cfg.seed)
    sha = ds.sha256()
    name = f"{Path(str(cfg.parent)).name}-ft-{sha[:8]}"
    path = None if out is False else (Path(out) if out else Path("finetune_out") / name)  # in the working directory
    if resume and not has_train_state(path):
        done = path is not None and (path / "manifest.json").exists()
        raise FileNotFoundError(f"resume: no {TRAIN_STATE} in {path} (nothing to continue"
                                f"{': the run there is complete' if done else ''})")
    buckets = choose_buckets([len(s) for s in ds.systems], bucket_limit(cfg))
    packed = pack_dataset(ds, buckets, parent.cutoffs)  # one graph capacity per bucket for every split
    packs = {k: select_packed(packed, split[k]) for k in ("train", "val", "test") if len(split[k])}
    steps_per_epoch = sum(math.ceil(len(pb.index) / cfg.batch_size) for pb in packs["train"])
    groups = parent.module.layer_groups()
    labels = param_labels(parent.params, cfg.freeze, groups)
    return _Run(cfg, parent, groups, ds, train, split, sha, name, path, buckets, packs, labels,
                make_optimizer(cfg, labels), steps_per_epoch, learning_rates(cfg, steps_per_epoch))


def _compile(run: _Run, params, opt_state, initial: bool, verbose: bool) -> _Programs:
    """Every bucket's train and eval program, compiled side by side (eval of the train split only
    when the refit or the initial metrics need it)."""
    train_step, eval_step = make_steps(run.parent.module, run.tx, run.labels, cfg=run.cfg)
    if verbose:
        print(f"compiling the train and eval programs of buckets {run.buckets} atoms side by side "
              f"(about a minute each on an H100; a persistent compilation cache skips it next time)", flush=True)
    t = time.perf_counter()
    eval_splits = ["val", "test"] + (["train"] if run.cfg.refit_composition or initial else [])
    train_progs, eval_progs = compile_programs(train_step, eval_step, params, opt_state=opt_state, packs=run.packs,
                                               batch_size=run.cfg.batch_size, eval_splits=eval_splits)
    return _Programs(train_progs, eval_progs, time.perf_counter() - t)


def _refit(run: _Run, progs: _Programs, params: dict, verbose: bool) -> dict | None:
    """With ``cfg.refit_composition``: refit ``params["atom_ref"]`` (in place) to the training
    split, from the parent's energies by the compiled eval programs (no extra compilation)."""
    if not run.cfg.refit_composition or "atom_ref" not in params:  # a model without a composition model
        return None
    energies = predict_energies_packed(progs.run_eval, params, run.packs["train"], batch_size=run.cfg.batch_size,
                                       n=len(run.ds))
    refit, info = refit_composition(run.parent, run.train_set, energies[run.split["train"]])
    params["atom_ref"] = jnp.asarray(refit.params["atom_ref"])  # frozen or not: Adam's moments start at 0
    if verbose:
        print(f"composition refit: {info}")
    return info


def _start(run: _Run, progs: _Programs, params, opt_state, initial: bool, resume: bool, verbose: bool) -> _Progress:
    """The state before the first epoch to run: epoch 0's metrics (if ``initial``), or the saved state."""
    cfg = run.cfg
    history = [{"epoch": 0, "compile_s": progs.compile_s,
                **{f"{k}_{m}": v for k in ("train", "val") if k in run.packs and initial
                   for m, v in evaluate_packed(progs.run_eval, params, run.packs[k], batch_size=cfg.batch_size).items()}}]
    if verbose and initial:
        print(f"epoch 0: train {format_metrics(_prefixed(history[0], 'train_'))} | "
              f"val {format_metrics(_prefixed(history[0], 'val_'))}")
    best = (history[0].get("val_loss", np.inf), 0, jax.tree.map(np.array, params))  # host copies
    prog = _Progress(params, opt_state, history, best, np.random.default_rng(cfg.seed))
    if resume:
        prog.done, prog.params, prog.opt_state, prog.best, prog.history = load_train_state(
            run.path, params, opt_state, rng=prog.rng, meta=run.state_meta)
        prog.elapsed = prog.history[-1].get("time_s", 0.0)
        if verbose:
            print(f"resumed after epoch {prog.done} from {run.path / TRAIN_STATE}")
    return prog


def _prefixed(row: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}


def _train(run: _Run, progs: _Programs, prog: _Progress, verbose: bool) -> int:
    """Epochs after ``prog.done`` up to ``cfg.epochs`` or an early stop; returns the last one run."""
    cfg = run.cfg
    t0 = time.perf_counter() - prog.elapsed
    if cfg.patience is not None and prog.done - prog.best[1] >= cfg.patience > 0:
        return prog.done  # resumed after the epoch that stopped it early
    epoch = prog.done
    for epoch in range(prog.done + 1, cfg.epochs + 1):
        row = _train_epoch(run, progs, prog, epoch, t0, verbose)
        if _record_epoch(run, prog, row, verbose):
            break
    return epoch


def _train_epoch(run: _Run, progs: _Programs, prog: _Progress, epoch: int, t0: float, verbose: bool) -> dict:
    """One pass over the shuffled training batches, then validation: the history row of ``epoch``
    (train metrics are running averages over the epoch's batches; ``time_s``: s since ``t0``)."""
    cfg, n_steps = run.cfg, run.steps_per_epoch
    outs = []  # kept on device: no host sync per step (jax dispatches ahead)
    bar = tqdm(iter_batches(run.packs["train"], cfg.batch_size, prog.rng), total=n_steps,
               desc=f"epoch {epoch}/{cfg.epochs}", disable=not verbose, leave=False)
    for step, (cap, batch) in enumerate(bar):
        prog.params, prog.opt_state, loss, stats = progs.train[cap](prog.params, prog.opt_state, batch,
                                                                    run.lr[(epoch - 1) * n_steps + step])
        outs.append((loss, stats))
        if verbose and step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.4g}")
    total, loss_sum = None, 0.0
    for loss, stats in outs:
        loss_sum += float(loss)
        total = accumulate(total, stats)
    row = {"epoch": epoch, **{f"train_{k}": v for k, v in summarize(total, loss_sum, n_steps).items()}}
    if "val" in run.packs:
        row.update({f"val_{k}": v for k, v in evaluate_packed(progs.run_eval, prog.params, run.packs["val"],
                                                               batch_size=cfg.batch_size).items()})
    row["time_s"] = time.perf_counter() - t0  # s since training began, this epoch's validation included
    return row


def _record_epoch(run: _Run, prog: _Progress, row: dict, verbose: bool) -> bool:
    """Append ``row`` to the history, keep the best parameters, save the training state; True: stop early."""
    cfg, epoch = run.cfg, row["epoch"]
    prog.history.append(row)
    if not np.isfinite(row["train_loss"]):
        raise FloatingPointError(f"training loss is {row['train_loss']} at epoch {epoch}")
    improved = row.get("val_loss", -np.inf) < prog.best[0] or "val" not in run.packs
    if improved:
        prog.best = (row.get("val_loss", np.nan), epoch, jax.tree.map(np.array, prog.params))
    if verbose:
        val = _prefixed(row, "val_")
        tqdm.write(f"epoch {epoch}: train loss {row['train_loss']:.4g} {format_metrics(_prefixed(row, 'train_'))}"
                   f" | val loss {val.get('loss', np.nan):.4g} {format_metrics(val)}{' *' if improved else ''}"
                   f" | {row['time_s']:.1f} s")
    if run.path is not None:
        save_train_state(run.path, epoch, prog.params, opt_state=prog.opt_state, best=prog.best, rng=prog.rng,
                         history=prog.history, meta=run.state_meta)
    stop = cfg.patience is not None and epoch - prog.best[1] >= cfg.patience
    if stop and verbose:
        print(f"early stop: no better validation loss for {cfg.patience} epochs")
    return stop


def _finish(run: _Run, progs: _Programs, prog: _Progress, last_epoch: int, n_train: int, refit_info: dict | None,
            verbose: bool) -> FinetuneResult:
    """Best (or last) parameters, test metrics, and the checkpoint folder written (if any)."""
    cfg = run.cfg
    params = jax.tree.map(jnp.asarray, prog.best[2]) if cfg.restore_best else prog.params
    test_metrics = (evaluate_packed(progs.run_eval, params, run.packs["test"], batch_size=cfg.batch_size)
                    if "test" in run.packs else {})
    if verbose and test_metrics:
        print(f"test (epoch {prog.best[1] if cfg.restore_best else last_epoch}): {format_metrics(test_metrics)}")
    tuned = Model(run.parent.module, params, run.name, dict(run.parent.metadata))
    if run.path is not None:
        _write_checkpoint(run, tuned, prog, n_train, refit_info, test_metrics)
        if verbose:
            print(f"checkpoint: {run.path}")
    return FinetuneResult(tuned, prog.history, test_metrics, run.path,
                          {k: [int(i) for i in v] for k, v in run.split.items()})


def _write_checkpoint(run: _Run, tuned: Model, prog: _Progress, n_train: int, refit_info: dict | None,
                      test_metrics: dict) -> None:
    """The checkpoint with its provenance (parent, data, split, groups, hyperparameters, history);
    the training state is removed: the run is complete."""
    cfg = run.cfg
    manifest = {
        "parent_model": run.parent.name, "parent_source_sha256": run.parent.metadata.get("source_sha256"),
        "finetune": {
            "dataset_sha256": run.sha, "n_structures": len(run.ds),
            "split_sizes": {k: len(v) for k, v in run.split.items()}, "split_seed": cfg.seed,
            "frozen_groups": resolve_groups(cfg.freeze, run.groups), "trainable_parameters": n_train,
            "hyperparameters": dataclasses.asdict(cfg), "buckets": run.buckets, "composition_refit": refit_info,
            "best_epoch": prog.best[1], "history": prog.history, "test_metrics": test_metrics,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    save_checkpoint(run.path, tuned, manifest)
    remove_train_state(run.path)
