r"""The activation base classes and the registry of activations by name."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..ops import (
    arccos_j,
    broadcast_shape,
    correlation,
    masked_sqrt,
    mul_temporary,
    outer,
)

_TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------- argument checks


def _finite_real(owner: str, name: str, value: Any) -> float:
    """``value`` as a float, or a ValueError naming the argument (one-element tensors and arrays pass)."""
    number = value
    if (
        isinstance(value, Tensor)
        and value.numel() == 1
        and not value.dtype.is_complex
        and value.dtype != torch.bool
    ):
        number = value.item()
    elif isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        number = value.item()
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not math.isfinite(float(number)):
        raise ValueError(f"{owner}: {name} must be a finite real number, got {value!r}")
    return float(number)


def _integer(owner: str, name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (any ``numbers.Integral`` but bool), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{owner}: {name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _set(obj: object, **values: Any) -> None:
    for key, value in values.items():
        object.__setattr__(obj, key, value)


# --------------------------------------------------------------------------- base classes and registry

ACTIVATIONS: dict[str, type[Activation]] = {}
"""Activations known by name, each built with its default arguments by :func:`get_activation`."""

ACTIVATION_CLASSES: list[type[Activation]] = []
"""Every registered activation class, in registration order (see :func:`activation_examples`)."""

_ActivationType = TypeVar("_ActivationType", bound=type)


def register_activation(name: str | None = None) -> Callable[[_ActivationType], _ActivationType]:
    """Class decorator: add an activation to :data:`ACTIVATION_CLASSES` and, with a ``name``, to
    :data:`ACTIVATIONS` (case-insensitive lookup by :func:`get_activation`).

    The test suite iterates over the registered classes' :meth:`Activation.examples`, so a
    registered activation is checked without being listed anywhere else.
    """

    def decorate(cls: _ActivationType) -> _ActivationType:
        if not (isinstance(cls, type) and issubclass(cls, Activation)):
            raise ValueError(f"register_activation expects an Activation subclass, got {cls!r}")
        if name is not None:
            key = name.strip().lower()
            if key in ACTIVATIONS and ACTIVATIONS[key] is not cls:
                raise ValueError(f"activation name {key!r} is already taken by {ACTIVATIONS[key].__name__}")
            ACTIVATIONS[key] = cls
        if cls not in ACTIVATION_CLASSES:
            ACTIVATION_CLASSES.append(cls)
        return cls

    return decorate


def activation_examples() -> list[Activation]:
    """One or more instances of every registered class: the defaults and representative parameters."""
    return [example for cls in ACTIVATION_CLASSES for example in cls.examples()]


def _broadcast_expand(cov: Tensor, *others: Tensor) -> Tensor:
    shape = broadcast_shape(cov.shape, *(t.shape for t in others))
    return cov.expand(shape)


class Activation:
    r"""Base class: an elementwise nonlinearity with Gaussian dual kernels.

    Subclasses implement ``dual`` (and ``__call__``). ``derivative_dual`` defaults to
    the derivative of ``dual`` in ``cov`` by autograd (Price's theorem); override it, or
    ``duals`` where the two share work, with a closed form where one exists. The O(n)
    variances default to the duals at ``var1 = cov = var2``.

    Class attributes read by the test suite and the docs:

    * ``homogeneity_degree``: ``r`` such that ``phi(a u) = a**r phi(u)`` for ``a > 0``, or ``None``;
    * ``exact``: whether the duals are exact (closed forms) rather than approximations.
    """

    homogeneity_degree: float | None = None
    exact: ClassVar[bool] = True

    @classmethod
    def examples(cls) -> tuple[Activation, ...]:
        """Instances the test suite checks; parameterized classes add representative arguments."""
        return (cls(),)

    def stax_layer(self) -> tuple[str, dict[str, Any]] | None:
        """The neural-tangents ``stax`` layer with the same :math:`\\phi` and kernel, as
        ``(name, keyword arguments)``, or ``None`` where there is none."""
        return None

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define __call__ (phi itself)")

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define dual")

    def derivative_dual(self, var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
        return self._dual_and_price_derivative(var1, cov, var2)[1]

    def _dual_and_price_derivative(self, var1: Tensor, cov: Tensor, var2: Tensor) -> tuple[Tensor, Tensor]:
        # Price's theorem: dE[phi(u)phi(v)]/dcov = E[phi'(u)phi'(v)]. The dual is elementwise in
        # its arguments, so the gradient of its sum is the elementwise derivative; the graph is
        # kept (create_graph) only when the caller differentiates the result itself.
        keep_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (var1, cov, var2))
        with torch.enable_grad():
            leaf = cov if cov.requires_grad else cov.detach().requires_grad_(True)
            full = _broadcast_expand(leaf, var1, var2)
            q = self.dual(var1, full, var2)
            (grad,) = torch.autograd.grad(
                q, full, torch.ones_like(q), create_graph=keep_graph, allow_unused=True
            )
        if grad is None:  # a dual that does not depend on cov (a constant activation)
            grad = torch.zeros_like(q)
        if not keep_graph:
            q, grad = q.detach(), grad.detach()
        return q, grad

    def _derivative_is_default(self) -> bool:
        return type(self).derivative_dual is Activation.derivative_dual

    def variance(self, var: Tensor) -> Tensor:
        return self.dual(var, var, var)

    def derivative_variance(self, var: Tensor) -> Tensor:
        return self.derivative_dual(var, var, var)

    def duals(
        self, var1: Tensor, cov: Tensor, var2: Tensor, derivative: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Both duals at once; activations override this where the two share work."""
        if not derivative:
            return self.dual(var1, cov, var2), None
        if self._derivative_is_default():
            return self._dual_and_price_derivative(var1, cov, var2)
        return self.dual(var1, cov, var2), self.derivative_dual(var1, cov, var2)


class CorrelationActivation(Activation):
    r"""An activation whose duals are most simply written in the correlation
    :math:`c = \Sigma_{xy}/\sqrt{\Sigma_{xx}\Sigma_{yy}}` and the standard deviations.

    Subclasses implement :meth:`correlation_duals`, returning both duals. The layer recursion
    computes the correlation once per layer and calls it directly (with the diagonal of a
    symmetric matrix exactly 1); ``duals`` computes the correlation first.
    """

    def correlation_duals(
        self, corr: Tensor, std1: Tensor, std2: Tensor, derivative: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """The duals from ``corr`` (n x m) and ``std1``, ``std2`` (broadcastable to it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define correlation_duals")

    def duals(self, var1, cov, var2, derivative=True):
        return self.correlation_duals(*correlation(var1, cov, var2), derivative=derivative)

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2)[1]

    def variance(self, var):
        std = masked_sqrt(var)
        return self.correlation_duals(torch.ones_like(var), std, std, derivative=False)[0]

    def derivative_variance(self, var):
        std = masked_sqrt(var)
        return self.correlation_duals(torch.ones_like(var), std, std)[1]


def _times_outer(a: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``a * (left * right)`` for a temporary ``a`` (see :func:`gp_ntk.ops.outer`)."""
    return mul_temporary(a, outer(left, right))


def _asin(z: Tensor) -> Tensor:
    # arcsin(z) = J_0(z) - pi/2, whose backward stays finite should |z| round to 1.
    return arccos_j(z, 0) - 0.5 * math.pi


def _eager() -> bool:
    return not torch.compiler.is_compiling()


def get_activation(activation: str | Activation) -> Activation:
    """Resolve a name from :data:`ACTIVATIONS` or pass an :class:`Activation` through."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.strip().lower()
        if key in ACTIVATIONS:
            return ACTIVATIONS[key]()
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(
            f"unknown activation {activation!r}; known names are: {known} "
            "(or pass an Activation object such as ArcCos(order=2), Erf(a, b, c), Numerical(fn))"
        )
    raise ValueError(
        f"activation must be a name or a gp_ntk.activations.Activation, got {type(activation).__name__}"
    )
