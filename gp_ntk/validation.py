r"""Argument checks shared by every public entry point of gp_ntk.

A leaf module (it imports nothing else from gp_ntk), like :mod:`gp_ntk.settings`. Every check
returns the value it accepted (converted where that is its job) or raises ``ValueError`` whose
message names the argument and says what was expected, so a refused call fails before it
changes any state.

* :func:`check_tensor`: a floating-point tensor of a given rank, last dimension, finiteness;
* :func:`check_int`, :func:`check_number`: integers and real numbers in ranges (``bool`` is
  never taken for a number);
* :func:`check_bounds`: a finite ``2 x d`` box with lower < upper;
* :func:`check_rows_finite`: NaN/inf refused row by row, with the count in the message.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_bounds",
    "check_int",
    "check_number",
    "check_rows_finite",
    "check_tensor",
    "describe",
    "is_integer",
    "is_real",
]


def describe(value: Any) -> str:
    """What ``value`` is, for an error message: a tensor's dtype, otherwise its type's name."""
    return f"tensor of dtype {value.dtype}" if isinstance(value, Tensor) else type(value).__name__


def is_integer(value: Any) -> bool:
    """``value`` is an integer (Python or NumPy), not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """``value`` is a real number (Python or NumPy), not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: Any, name: str, *, minimum: int | None = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``, else raise.

    ``minimum=1`` (the default) reads "a positive integer", ``minimum=0`` "a non-negative
    integer", ``minimum=None`` any integer.

    >>> check_int(3, "depth")
    3
    >>> check_int(0, "depth")
    Traceback (most recent call last):
    ...
    ValueError: depth must be a positive integer, got 0
    """
    if minimum == 1 and maximum is None:
        expected = "a positive integer"
    elif minimum == 0 and maximum is None:
        expected = "a non-negative integer"
    elif minimum is None and maximum is None:
        expected = "an integer"
    elif maximum is None:
        expected = f"an integer >= {minimum}"
    elif minimum is None:
        expected = f"an integer <= {maximum}"
    else:
        expected = f"an integer in [{minimum}, {maximum}]"
    if (
        not is_integer(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
    finite: bool = True,
) -> float:
    """Return ``value`` as a ``float`` if it is a real number in the given range, else raise.

    ``strict_minimum``/``strict_maximum`` exclude the end points; ``finite`` refuses NaN and
    infinities (NaN is refused always: it would make every later comparison false).

    >>> check_number(0.5, "lr", minimum=0, strict_minimum=True)
    0.5
    >>> check_number(-1.0, "lr", minimum=0, strict_minimum=True)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got -1.0
    """
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if strict_maximum else '<='} {maximum:g}")
    expected = f"a {'finite ' if finite else ''}number" + (f" {' and '.join(parts)}" if parts else "")
    ok = is_real(value) and not math.isnan(value) and (not finite or math.isfinite(value))
    if ok and minimum is not None:
        ok = value > minimum if strict_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if strict_maximum else value <= maximum
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_rows_finite(value: Tensor, name: str, hint: str = "remove those rows first") -> Tensor:
    """Return ``value`` if it has no NaN/inf entry, else raise naming how many rows (over the
    last dimension) have one."""
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        rows = int(bad.reshape(-1, value.shape[-1]).any(-1).sum()) if value.dim() > 1 else int(bad.sum())
        raise ValueError(f"{name} contains NaN or infinite values in {rows} row(s); {hint}")
    return value


def check_tensor(
    value: Any,
    name: str,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    last_dim: int | None = None,
    finite: bool = True,
) -> Tensor:
    """Return ``value`` if it is a floating-point tensor with the given shape, else raise.

    Args:
        value: the argument.
        name: its name, for the message.
        ndim: exact number of dimensions.
        min_ndim: least number of dimensions (batch dimensions allowed in front).
        last_dim: size of the last dimension (the number of features).
        finite: refuse NaN and infinite entries.

    >>> check_tensor(torch.zeros(4, 2), "x", ndim=2, last_dim=3)
    Traceback (most recent call last):
    ...
    ValueError: x must have 3 features in its last dimension, got shape (4, 2)
    """
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {describe(value)}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
    if min_ndim is not None and value.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(value.shape)}")
    if last_dim is not None and (value.dim() == 0 or value.shape[-1] != last_dim):
        raise ValueError(
            f"{name} must have {last_dim} features in its last dimension, got shape {tuple(value.shape)}"
        )
    if finite:
        check_rows_finite(value, name, "remove those entries first")
    return value


def check_bounds(bounds: Any, num_dims: int | None = None, name: str = "bounds") -> Tensor:
    """Return ``bounds`` if it is a finite ``2 x d`` float tensor with lower < upper, else raise."""
    if not isinstance(bounds, Tensor) or not bounds.is_floating_point():
        raise ValueError(f"{name} must be a 2 x d floating-point tensor, got {describe(bounds)}")
    if bounds.dim() != 2 or bounds.shape[0] != 2 or bounds.shape[1] < 1:
        raise ValueError(f"{name} must have shape (2, d) (lower and upper bounds), got {tuple(bounds.shape)}")
    if num_dims is not None and bounds.shape[1] != num_dims:
        raise ValueError(
            f"{name} must have {num_dims} columns (one per input feature), got {bounds.shape[1]}"
        )
    if not bool(torch.isfinite(bounds).all()):
        raise ValueError(f"{name} must be finite, got {bounds.tolist()}")
    if not bool((bounds[1] > bounds[0]).all()):
        bad = (bounds[1] <= bounds[0]).nonzero().flatten().tolist()
        raise ValueError(f"{name}: every lower bound must be below its upper bound; not so in columns {bad}")
    return bounds
