"""Structured linear maps and heads from the seed papers, as plain ``torch.nn.Module``s, with
analyses of their structure beside them.

Importing :mod:`repscope.nn` imports torch; the rest of repscope does not import this package
unless asked.
"""

from repscope.nn._margin import MARGIN_DEFAULTS, MarginHead, margin_logits

__all__ = ["MARGIN_DEFAULTS", "MarginHead", "margin_logits"]
