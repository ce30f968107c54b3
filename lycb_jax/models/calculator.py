"""ASE calculator backed by a lycb_jax model."""

from __future__ import annotations

from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from lycb_jax.models import Model, load_model, with_dispersion
from lycb_jax.models.paths import DEFAULT_MODEL
from lycb_jax.models.predict import predict
from lycb_jax.units import EV_A3_TO_GPA


class Calculator(_AseCalculator):
    """``atoms.calc = lycb_jax.Calculator()``: energy (eV), forces (eV/A), stress (eV/A^3, ASE
    convention: Voigt order xx yy zz yz xz xy, positive = tensile), magmoms (muB).

    Args:
      model: a checkpoint name or folder, or a loaded :class:`lycb_jax.models.Model`.
      dispersion: None, or ``"d3bj"`` (``"d3bj:<functional>"``): add D3(BJ) to the model
        (:func:`lycb_jax.models.with_dispersion`).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "magmoms"]

    def __init__(self, model: str | Model = DEFAULT_MODEL, dispersion: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model = load_model(model) if not isinstance(model, Model) else model
        if dispersion is not None:
            self.model = with_dispersion(self.model, dispersion)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pred = predict(self.model, [self.atoms])[0]
        self.results = {
            "energy": pred.energy,
            "free_energy": pred.energy,
            "forces": pred.forces,
            "stress": full_3x3_to_voigt_6_stress(pred.stress / EV_A3_TO_GPA),
            "magmoms": pred.magmoms,
        }
