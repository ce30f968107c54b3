"""Active learning (the paper's iterative fine-tuning): labellers (:mod:`.labellers`), farthest-point
sampling (:mod:`.sampling`) and the loop (:mod:`.loop`)."""

from lycb_jax.active.labellers import (ASELabeller, BasisCorrection, LabelCache, gpaw_labeller, kpoint_grid, label_structures,
                                       vasp_labeller)
from lycb_jax.active.loop import ActiveLearningConfig, active_learn
from lycb_jax.active.sampling import farthest_point_sampling, position_features

__all__ = ["ASELabeller", "ActiveLearningConfig", "BasisCorrection", "LabelCache", "active_learn", "farthest_point_sampling",
           "gpaw_labeller", "kpoint_grid", "label_structures", "position_features", "vasp_labeller"]
