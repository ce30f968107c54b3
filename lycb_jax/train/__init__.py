"""Fine-tuning a potential (CHGNet by default) on new labelled data (DFT energies, forces,
stresses, magmoms) with optax.

One concept per module:

* :mod:`.config`: :class:`FinetuneConfig`, the hyperparameters (JSON/YAML);
* :mod:`.data`: :class:`Dataset`, :func:`read_dataset` and the label conventions (energy eV total,
  forces eV/A, stress GPa with ASE's sign, magmoms muB);
* :mod:`.pack`: padding into buckets of fixed shape, graphs built once at the model's cutoffs;
* :mod:`.groups`: the model's layer groups (``model.module.layer_groups()``) and freezing;
* :mod:`.loss`: the loss of a batch (CHGNet's ``CombinedLoss``) and its matrix-product precision;
* :mod:`.optim`: Adam/AdamW on the trainable groups, CHGNet's cosine schedule;
* :mod:`.programs`: the jitted train and eval steps, compiled ahead of time side by side;
* :mod:`.metrics`: MAE/RMSE in meV/atom, meV/A, GPa, muB, and :func:`evaluate`;
* :mod:`.refit`: least-squares refit of the composition model (AtomRef);
* :mod:`.state`: the resumable training state between epochs;
* :mod:`.loop`: :func:`finetune`, the run from data to checkpoint.

The command line is ``lycb-jax finetune`` (:mod:`lycb_jax.cli.finetune`).
"""

from lycb_jax.train.config import FinetuneConfig
from lycb_jax.train.data import Dataset, as_dataset, read_dataset
from lycb_jax.train.groups import group_of, group_sizes, param_labels, resolve_groups
from lycb_jax.train.loop import FinetuneResult, finetune
from lycb_jax.train.loss import batch_loss, matmul_precision
from lycb_jax.train.metrics import evaluate, evaluate_packed, predict_energies_packed
from lycb_jax.train.optim import learning_rates, make_optimizer
from lycb_jax.train.pack import (PackedBucket, batched_graphs, bucket_limit, choose_buckets, iter_batches, pack_dataset,
                                 select_packed)
from lycb_jax.train.programs import compile_programs, compiler_options, loss_key, make_eval_step, make_steps
from lycb_jax.train.refit import refit_composition
from lycb_jax.train.state import TRAIN_STATE

__all__ = ["TRAIN_STATE", "Dataset", "FinetuneConfig", "FinetuneResult", "PackedBucket", "as_dataset", "batch_loss",
           "batched_graphs", "bucket_limit", "choose_buckets", "compile_programs", "compiler_options", "evaluate",
           "evaluate_packed", "finetune", "group_of", "group_sizes", "iter_batches", "learning_rates", "loss_key",
           "make_eval_step", "make_optimizer", "make_steps", "matmul_precision", "pack_dataset", "param_labels",
           "predict_energies_packed", "read_dataset", "refit_composition", "resolve_groups", "select_packed"]
