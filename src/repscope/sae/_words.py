"""The words every SAE view uses for a dead latent: one name per definition.

A latent is "dead" in one of three senses, and each has one record key and one name in the
report, the command line and the docstrings:

* **dead in training** (``dead_in_training``): no firing in the last ``dead_after`` training
  vectors at the end of training: the window the trainer keeps (``TrainState.dead_mask``,
  what AuxK revives); the history's ``dead_in_training`` curve ends at this value.
* **never fired in training** (``never_fired_in_training``): no firing over all of training
  (``TrainState.fire_count == 0``); the history's ``never_fired`` curve ends at this value.
* **not firing on the evaluation set** (``dead_fraction``): no firing on the evaluated
  (held-out) inputs; ``density_histogram["n_dead"]`` counts these latents.
"""

from __future__ import annotations

__all__ = ["DEAD_WORDS"]

#: Record key -> the words every view shows for it.
DEAD_WORDS = {
    "dead_in_training": "dead in training",
    "never_fired_in_training": "never fired in training",
    "dead_fraction": "not firing on the evaluation set",
}
