"""Fine-tuning a potential (CHGNet by default) on new labelled data (DFT energies, forces,
stresses, magmoms) with optax.

One concept per module:

* :mod:`.config`: :class:`FinetuneConfig`, the hyperparameters (JSON/YAML);
* :mod:`.data`: :class:`Dataset`, :func:`read_dataset` and the label conventions (energy eV total,
  forces eV/A, stress GPa with ASE's sign, magmoms muB);
* :mod:`.pack`: padding into buckets of fixed shape, graphs built once at the model's cutoffs;
* :mod:`.loss`: the loss of a batch (CHGNet's ``CombinedLoss``) and its matrix-product precision;
* :mod:`.optim`: Adam/AdamW on the trainable groups, CHGNet's cosine schedule;
* :mod:`.programs`: the jitted train and eval steps, compiled ahead of time side by side;
* :mod:`.metrics`: MAE/RMSE in meV/atom, meV/A, GPa, muB, and :func:`evaluate`;
* :mod:`.refit`: least-squares refit of the composition model (AtomRef);
* :mod:`.state`: the resumable training state between epochs;
* :mod:`.loop`: :func:`finetune`, the run from data to checkpoint.

The command line is ``lycb-jax finetune`` (:mod:`lycb_jax.cli.finetune`).
"""

from lycb_jax.runtime import lazy

# name -> module, imported on first use (keeps `import lycb_jax...` and `lycb-jax --help` fast)
_LAZY = {
    'FinetuneConfig': 'lycb_jax.train.config',
    'Dataset': 'lycb_jax.train.data',
    'as_dataset': 'lycb_jax.train.data',
    'read_dataset': 'lycb_jax.train.data',
    'FinetuneResult': 'lycb_jax.train.loop',
    'finetune': 'lycb_jax.train.loop',
    'batch_loss': 'lycb_jax.train.loss',
    'matmul_precision': 'lycb_jax.train.loss',
    'evaluate': 'lycb_jax.train.metrics',
    'evaluate_packed': 'lycb_jax.train.metrics',
    'predict_energies_packed': 'lycb_jax.train.metrics',
    'learning_rates': 'lycb_jax.train.optim',
    'make_optimizer': 'lycb_jax.train.optim',
    'PackedBucket': 'lycb_jax.train.pack',
    'batched_graphs': 'lycb_jax.train.pack',
    'bucket_limit': 'lycb_jax.train.pack',
    'choose_buckets': 'lycb_jax.train.pack',
    'iter_batches': 'lycb_jax.train.pack',
    'pack_dataset': 'lycb_jax.train.pack',
    'select_packed': 'lycb_jax.train.pack',
    'compile_programs': 'lycb_jax.train.programs',
    'compiler_options': 'lycb_jax.train.programs',
    'loss_key': 'lycb_jax.train.programs',
    'make_eval_step': 'lycb_jax.train.programs',
    'make_steps': 'lycb_jax.train.programs',
    'refit_composition': 'lycb_jax.train.refit',
    'TRAIN_STATE': 'lycb_jax.train.config',
}

__all__ = ["TRAIN_STATE", "Dataset", "FinetuneConfig", "FinetuneResult", "PackedBucket", "as_dataset", "batch_loss",
           "batched_graphs", "bucket_limit", "choose_buckets", "compile_programs", "compiler_options", "evaluate",
           "evaluate_packed", "finetune", "iter_batches", "learning_rates", "loss_key", "make_eval_step",
           "make_optimizer", "make_steps", "matmul_precision", "pack_dataset", "predict_energies_packed",
           "read_dataset", "refit_composition", "select_packed"]


__getattr__, __dir__ = lazy.attributes(__name__, _LAZY)
