"""How many optimiser steps an SAE gets when nobody says: a budget from the data size.

One pass over a few thousand token vectors is a few dozen steps, far too few for an SAE to
converge (the README's ``sae train`` example trained 33 steps, and its k = 64 SAE came out
worse than its k = 32 one). :func:`plan_steps` turns the data size into a step budget with
one rule, :data:`BUDGET_RULE`, and warns (:class:`RuntimeWarning`) when a budget is below
:data:`FEW_STEPS`, naming the options that raise it.

The budget counts training vectors seen rather than steps, so that it costs about the same
whatever the batch size: a million vectors is about 1,000 steps of 1,024 (a few minutes for a
sweep of three 3,072-latent SAEs on 384 features on a laptop CPU).
"""

from __future__ import annotations

import math
import warnings

__all__ = ["BUDGET_RULE", "FEW_STEPS", "MAX_EPOCHS", "MIN_VECTORS", "plan_steps"]

#: Default budget: enough epochs to see this many training vectors ...
MIN_VECTORS = 1_000_000
#: ... but no more than this many passes over the training vectors (small data sets) ...
MAX_EPOCHS = 100
#: ... and never less than one pass (large data sets).
BUDGET_RULE = (
    f"enough epochs to see {MIN_VECTORS:,} training vectors, at most {MAX_EPOCHS} epochs and "
    "at least one"
)
#: A budget below this many steps gets a RuntimeWarning: an SAE rarely converges in fewer.
FEW_STEPS = 500


def plan_steps(
    n_vectors: int,
    batch_size: int,
    *,
    n_steps: int | None = None,
    n_epochs: float | None = None,
    names: tuple[str, str] = ("n_steps", "n_epochs"),
) -> int:
    """The optimiser steps of a training run on ``n_vectors`` vectors in batches of
    ``batch_size``.

    ``n_steps`` wins; else ``n_epochs`` passes over the data; else the default budget
    (:data:`BUDGET_RULE`): ``ceil(epochs * n_vectors / batch_size)`` steps with
    ``epochs = clip(MIN_VECTORS / n_vectors, 1, MAX_EPOCHS)``.

    Parameters
    ----------
    n_vectors : int
        Training vectors (tokens of a token layer), at least 1.
    batch_size : int
        Vectors per step, at least 1.
    n_steps : int, optional
        Steps asked for.
    n_epochs : float, optional
        Passes over the data asked for (when ``n_steps`` is None).
    names : pair of str
        How the warning names the step and epoch options (the command line passes
        ``("--steps", "--epochs")``).

    Returns
    -------
    int

    Warns
    -----
    RuntimeWarning
        The budget is below :data:`FEW_STEPS` steps; the message names the options that raise
        it.

    Examples
    --------
    >>> plan_steps(30_000, 1024)  # 33.3 epochs: a million vectors
    977
    >>> plan_steps(5_000_000, 1024)  # one epoch is more than a million vectors
    4883
    >>> plan_steps(8_000, 256)  # capped at 100 epochs
    3125
    """
    from repscope._validation import check_scalar

    n_vectors = int(check_scalar(n_vectors, "n_vectors", caller="plan_steps", kind=int,
                                 min_value=1))
    batch_size = int(check_scalar(batch_size, "batch_size", caller="plan_steps", kind=int,
                                  min_value=1))
    if n_steps is not None:
        steps = int(check_scalar(n_steps, "n_steps", caller="plan_steps", kind=int, min_value=1))
    else:
        if n_epochs is not None:
            epochs = float(check_scalar(n_epochs, "n_epochs", caller="plan_steps", min_value=0,
                                        include_min=False))
        else:
            epochs = min(MAX_EPOCHS, max(1.0, MIN_VECTORS / n_vectors))
        steps = max(1, math.ceil(epochs * n_vectors / batch_size))
    if steps < FEW_STEPS:
        steps_name, epochs_name = names
        seen = steps * batch_size / n_vectors
        warnings.warn(
            f"{steps} optimiser steps ({seen:.3g} epochs of {n_vectors:,} training vectors) are "
            f"too few for an SAE to converge (fewer than {FEW_STEPS:,}); raise {steps_name} or "
            f"{epochs_name}.",
            RuntimeWarning,
            stacklevel=2,
        )
    return steps
