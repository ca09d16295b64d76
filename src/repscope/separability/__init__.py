"""How separable is a representation: linear baselines and closed-form measures."""

from repscope.separability._logistic import SeparabilityResult, logistic_separability

__all__ = ["SeparabilityResult", "logistic_separability"]
