"""scikit-learn parameter validation that raises repscope's errors.

Every estimator declares its constructor contract as data, scikit-learn style::

    _parameter_constraints = {"cv": [Interval(Integral, 2, None, closed="left")], ...}

and calls ``self._validate_params()`` at the start of ``fit`` (never in ``__init__``, which only
stores its arguments). :class:`ValidatedEstimator` runs scikit-learn's validation and re-raises
its :class:`~sklearn.utils._param_validation.InvalidParameterError` as a :class:`ParameterError`,
which is at the same time a :class:`~repscope.exceptions.RepscopeValueError`, a
:class:`~repscope.exceptions.RepscopeTypeError` and scikit-learn's ``InvalidParameterError``:
``except RepscopeError`` (the CLI's one-line errors), ``except ValueError`` and scikit-learn's
own estimator checks all see it. The message is scikit-learn's, e.g. ``The 'cv' parameter of
RidgeProbe must be an int in the range [2, inf). Got 1 instead.``

Checks that constraints cannot express (a grid that must be non-empty, finite and
non-negative) stay in the estimators and raise :func:`parameter_error` with the same wording.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import HasMethods, InvalidParameterError

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["ParameterError", "TorchDevice", "ValidatedEstimator", "parameter_error"]


class ParameterError(RepscopeValueError, RepscopeTypeError, InvalidParameterError):
    """A constructor parameter of an estimator has the wrong type or value.

    Also scikit-learn's ``InvalidParameterError`` (itself a ``ValueError`` and a
    ``TypeError``), so scikit-learn's estimator checks recognise it.
    """


def parameter_error(owner: Any, name: str, expected: str, value: Any) -> ParameterError:
    """A :class:`ParameterError` with scikit-learn's wording.

    ``The {name!r} parameter of {Owner} must be {expected}. Got {value!r} instead.``
    """
    caller = owner if isinstance(owner, str) else type(owner).__name__
    return ParameterError(
        f"The {name!r} parameter of {caller} must be {expected}. Got {value!r} instead."
    )


class TorchDevice(HasMethods):
    """Constraint satisfied by a ``torch.device``, checked without importing torch.

    (A ``HasMethods`` subclass only so that scikit-learn's ``make_constraint`` accepts it.)
    """

    def __init__(self) -> None:
        super().__init__([])

    def is_satisfied_by(self, val: Any) -> bool:
        cls = type(val)
        return cls.__name__ == "device" and cls.__module__.split(".")[0] == "torch"

    def __str__(self) -> str:
        return "a torch.device"


class ValidatedEstimator(BaseEstimator):
    """``BaseEstimator`` whose ``_validate_params`` raises :class:`ParameterError`.

    Subclasses set ``_parameter_constraints`` for every ``__init__`` parameter and call
    ``self._validate_params()`` first thing in ``fit`` (and in any other fitting entry point).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def _validate_params(self) -> None:
        try:
            super()._validate_params()
        except InvalidParameterError as err:
            raise ParameterError(str(err)) from None
