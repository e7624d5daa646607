r"""Elementwise activations and their dual kernels.

Each activation :math:`\phi` is one small, stateless, picklable value (a frozen dataclass) that
supplies

* ``__call__(x)``: :math:`\phi(x)` itself (used to build finite networks, e.g. in tests);
* ``dual(var1, cov, var2)``: :math:`\mathbb E[\phi(u)\phi(v)]`, the one method a subclass must write;
* ``derivative_dual(var1, cov, var2)``: :math:`\mathbb E[\phi'(u)\phi'(v)]`;
* ``duals(var1, cov, var2)``: both at once;
* ``variance(var)`` / ``derivative_variance(var)``: the same at :math:`u = v`, in O(n),

for :math:`(u, v) \sim \mathcal N\big(0, \begin{bmatrix}\Sigma_{xx} & \Sigma_{xy}\\ \Sigma_{xy} & \Sigma_{yy}\end{bmatrix}\big)`,
where ``var1`` = :math:`\Sigma_{xx}`, ``cov`` = :math:`\Sigma_{xy}`, ``var2`` = :math:`\Sigma_{yy}`
broadcast against each other. The layer recursion in :mod:`gp_ntk.functional` knows nothing
else about an activation.

The derivative dual defaults to Price's theorem [Price1958]_,

.. math::
    \frac{\partial}{\partial\Sigma_{xy}}\,\mathbb E[\phi(u)\phi(v)] = \mathbb E[\phi'(u)\phi'(v)],

evaluated by autograd on ``Activation.dual``; every activation shipped here overrides it
with a closed form. Adding an activation means one class decorated with
:func:`register_activation`: it then has a name in :data:`ACTIVATIONS` (if it gives one) and its
:meth:`Activation.examples` are checked by the test suite (against brute-force quadrature,
Monte Carlo, Price's theorem and, where :meth:`Activation.stax_layer` names one, neural-tangents).

Derivatives are taken almost everywhere, as autograd takes them: the step and sign functions
have :math:`\phi' = 0`, so their NTK contribution through the derivative dual vanishes.

Parameters follow neural-tangents' ``stax`` layers [Novak2020]_ (``Erf(a, b, c)``,
``Sin(a, b, c)``, ``Exp(a, b)``, ``Gaussian(a, b)``, ``Rbf(gamma)``, ``Monomial(degree)``,
``Polynomial(coef)``, ...), so that a kernel built there ports by name.

.. [Price1958] R. Price, "A useful theorem for nonlinear devices having Gaussian inputs",
   IRE Transactions on Information Theory 4(2), 1958.
.. [Novak2020] R. Novak et al., "Neural Tangents: fast and easy infinite neural networks in
   Python", ICLR 2020.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor

from .functional import (
    _masked_sqrt,
    _mul,
    arccos_j,
    arccos_j_pair,
    correlation,
    double_factorial,
    gram_determinant,
    outer,
)

__all__ = [
    "Activation",
    "CorrelationActivation",
    "ABReLU",
    "Abs",
    "ArcCos",
    "Cos",
    "Erf",
    "Exp",
    "GELU",
    "Gaussian",
    "Identity",
    "LeakyReLU",
    "Monomial",
    "Numerical",
    "Polynomial",
    "ReLU",
    "Rbf",
    "Sign",
    "Sin",
    "Step",
    "ACTIVATIONS",
    "ACTIVATION_CLASSES",
    "activation_examples",
    "get_activation",
    "register_activation",
]

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
    shape = torch.broadcast_shapes(cov.shape, *(t.shape for t in others))
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
        std = _masked_sqrt(var)
        return self.correlation_duals(torch.ones_like(var), std, std, derivative=False)[0]

    def derivative_variance(self, var):
        std = _masked_sqrt(var)
        return self.correlation_duals(torch.ones_like(var), std, std)[1]


def _times_outer(a: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``a * (left * right)`` for a temporary ``a`` (see :func:`gp_ntk.functional.outer`)."""
    return _mul(a, outer(left, right))


def _asin(z: Tensor) -> Tensor:
    # arcsin(z) = J_0(z) - pi/2, whose backward stays finite should |z| round to 1.
    return arccos_j(z, 0) - 0.5 * math.pi


def _eager() -> bool:
    return not torch.compiler.is_compiling()


# --------------------------------------------------------------------------- ReLU family


@register_activation("abrelu")
@dataclass(frozen=True)
class ABReLU(CorrelationActivation):
    r""":math:`\phi(u) = a\min(u, 0) + b\max(u, 0)` (neural-tangents' ``ABRelu(a, b)``).

    With :math:`c` the correlation, :math:`J_n` Cho & Saul's angular functions and
    :math:`J_n(-c) = J_n(\pi - \theta)`:

    .. math::
        \mathbb E[\phi(u)\phi(v)] = \frac{\sqrt{\Sigma_{xx}\Sigma_{yy}}}{2\pi}
            \big[(a^2+b^2)J_1(c) - 2ab\,J_1(-c)\big],\qquad
        \mathbb E[\phi'(u)\phi'(v)] = \frac{(a^2+b^2)J_0(c) + 2ab\,J_0(-c)}{2\pi},

    evaluated with one ``arccos`` through :math:`J_1(-c) = J_1(c) - \pi c` and
    :math:`J_0(-c) = \pi - J_0(c)`.
    """

    a: float = 0.0
    b: float = 1.0
    homogeneity_degree = 1.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, a=_finite_real(name, "a", self.a), b=_finite_real(name, "b", self.b))

    @classmethod
    def examples(cls):
        return (cls(), cls(-0.5, 1.5), cls(0.2, 1.0), cls(1.0, 1.0))

    def stax_layer(self):
        return "ABRelu", {"a": self.a, "b": self.b}

    def __call__(self, x: Tensor) -> Tensor:
        return self.a * torch.clamp(x, max=0.0) + self.b * torch.clamp(x, min=0.0)

    def correlation_duals(self, corr, std1, std2, derivative=True):
        sq, cross = self.a**2 + self.b**2, 2.0 * self.a * self.b
        if derivative:
            j1, j0 = arccos_j_pair(corr, 1)
        else:
            j1, j0 = arccos_j(corr, 1), None
        # (sq J_1(c) - cross J_1(-c)) / 2pi, the norms multiplied in as two outer factors
        q = _mul(j1, (sq - cross) / _TWO_PI)
        if cross:
            q = torch.add(q, corr, alpha=cross * math.pi / _TWO_PI)
        q = _times_outer(q, std1, std2)
        if not derivative:
            return q, None
        q_dot = _mul(j0, (sq - cross) / _TWO_PI)
        return q, (q_dot + cross * math.pi / _TWO_PI if cross else q_dot)

    def variance(self, var):
        return 0.5 * (self.a**2 + self.b**2) * var

    def derivative_variance(self, var):
        return torch.full_like(var, 0.5 * (self.a**2 + self.b**2))


@register_activation("relu")
@dataclass(frozen=True)
class ReLU(ABReLU):
    r""":math:`\phi(u) = \max(u, 0)`: :math:`\mathbb E[\phi\phi] = \tfrac{1}{2\pi}\sqrt{\Sigma_{xx}\Sigma_{yy}}\,J_1(\theta)`, :math:`\mathbb E[\phi'\phi'] = \tfrac{\pi - \theta}{2\pi}`."""

    a: float = field(default=0.0, init=False)
    b: float = field(default=1.0, init=False)

    @classmethod
    def examples(cls):
        return (cls(),)

    def stax_layer(self):
        return "Relu", {}

    def __repr__(self) -> str:
        return "ReLU()"


@register_activation("leaky_relu")
@dataclass(frozen=True)
class LeakyReLU(ABReLU):
    r""":math:`\phi(u) = \max(u, 0) + \text{slope}\cdot\min(u, 0)` (``ABReLU(slope, 1)``)."""

    slope: float = 0.01
    a: float = field(default=0.0, init=False)
    b: float = field(default=1.0, init=False)

    def __post_init__(self) -> None:
        slope = _finite_real("LeakyReLU", "slope", self.slope)
        _set(self, slope=slope, a=slope)

    @classmethod
    def examples(cls):
        return (cls(), cls(0.2))

    def stax_layer(self):
        return "LeakyRelu", {"alpha": self.slope}

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


@register_activation("abs")
@dataclass(frozen=True)
class Abs(ABReLU):
    r""":math:`\phi(u) = |u|` (``ABReLU(-1, 1)``): :math:`\mathbb E[\phi'\phi'] = \tfrac{2}{\pi}\arcsin c`."""

    a: float = field(default=-1.0, init=False)
    b: float = field(default=1.0, init=False)

    @classmethod
    def examples(cls):
        return (cls(),)

    def stax_layer(self):
        return "Abs", {}

    def __repr__(self) -> str:
        return "Abs()"


@register_activation("identity")
@dataclass(frozen=True)
class Identity(Activation):
    r""":math:`\phi(u) = u`: :math:`\mathbb E[\phi\phi] = \Sigma_{xy}`, :math:`\mathbb E[\phi'\phi'] = 1`."""

    homogeneity_degree = 1.0

    def stax_layer(self):
        return "Identity", {}

    def __call__(self, x: Tensor) -> Tensor:
        return x

    def dual(self, var1, cov, var2):
        return cov

    def derivative_dual(self, var1, cov, var2):
        return torch.ones_like(cov)

    def variance(self, var):
        return var

    def derivative_variance(self, var):
        return torch.ones_like(var)


@register_activation()
@dataclass(frozen=True)
class ArcCos(CorrelationActivation):
    r"""Rectified monomial :math:`\phi(u) = \Theta(u)\,u^n` of Cho & Saul (2009)
    (neural-tangents' ``RectifiedMonomial(n)``).

    .. math::
        \mathbb E[\phi(u)\phi(v)] = \frac{(\Sigma_{xx}\Sigma_{yy})^{n/2}}{2\pi} J_n(\theta),\qquad
        \mathbb E[\phi'(u)\phi'(v)] = \frac{n^2(\Sigma_{xx}\Sigma_{yy})^{(n-1)/2}}{2\pi} J_{n-1}(\theta),

    the second being 0 for :math:`n = 0` (the step function's derivative vanishes a.e.).
    Cho & Saul's kernel :math:`k_n` is twice the first expression. Against a zero-variance
    input (zero-norm row, no bias) the correlation is taken as 0, which gives 1/4 for
    :math:`n = 0` (as if :math:`\Theta(0) = 1/2`) and 0 for :math:`n \ge 1`.
    """

    order: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.order, bool) or not isinstance(self.order, numbers.Integral) or self.order < 0:
            raise ValueError(f"order must be a non-negative integer, got {self.order!r}")
        _set(self, order=int(self.order))

    @classmethod
    def examples(cls):
        return (cls(0), cls(1), cls(2), cls(3))

    def stax_layer(self):
        return "RectifiedMonomial", {"degree": self.order}

    @property
    def homogeneity_degree(self) -> float:  # type: ignore[override]
        return float(self.order)

    def __call__(self, x: Tensor) -> Tensor:
        positive = x > 0
        if self.order == 0:
            return positive.to(x.dtype)
        return torch.where(positive, x, torch.zeros_like(x)) ** self.order

    def correlation_duals(self, corr, std1, std2, derivative=True):
        n = self.order
        if n == 0 or not derivative:
            j_n, j_lower = arccos_j(corr, n), None
        else:
            j_n, j_lower = arccos_j_pair(corr, n)
        q = _mul(j_n, 1.0 / _TWO_PI)
        if n > 0:
            q = _times_outer(q, std1**n, std2**n)
        if not derivative:
            return q, None
        if n == 0:
            return q, torch.zeros_like(q)
        q_dot = _mul(j_lower, n * n / _TWO_PI)
        if n > 1:
            q_dot = _times_outer(q_dot, std1 ** (n - 1), std2 ** (n - 1))
        return q, q_dot

    def variance(self, var):
        n = self.order
        return 0.5 * double_factorial(2 * n - 1) * var**n

    def derivative_variance(self, var):
        n = self.order
        if n == 0:
            return torch.zeros_like(var)
        return 0.5 * n * n * double_factorial(2 * n - 3) * var ** (n - 1)


@register_activation("step")
@dataclass(frozen=True)
class Step(ArcCos):
    r"""Heaviside step :math:`\Theta(u)` (``ArcCos(0)``): :math:`\mathbb E[\phi\phi] = \tfrac{\pi-\theta}{2\pi}`, derivative dual 0."""

    order: int = field(default=0, init=False)

    @classmethod
    def examples(cls):
        return (cls(),)

    def __repr__(self) -> str:
        return "Step()"


@register_activation("sign")
@dataclass(frozen=True)
class Sign(CorrelationActivation):
    r""":math:`\phi(u) = \operatorname{sign} u` (neural-tangents' ``Sign()``), with :math:`\operatorname{sign} 0 = 0`.

    :math:`\operatorname{sign} u\,\operatorname{sign} v = 1 - 2\cdot\mathbb 1[uv < 0]`, and
    :math:`P(uv < 0) = \theta/\pi` for the angle :math:`\theta = \arccos c` (Sheppard), so

    .. math::
        \mathbb E[\phi(u)\phi(v)] = 1 - \frac{2\theta}{\pi} = \frac{2}{\pi}\arcsin c,\qquad
        \mathbb E[\phi'(u)\phi'(v)] = 0

    (the derivative vanishes almost everywhere). A zero-variance input is the constant 0,
    whose dual with anything is 0; the variance is 1 for :math:`\Sigma > 0`.
    """

    homogeneity_degree = 0.0

    def stax_layer(self):
        return "Sign", {}

    def __call__(self, x: Tensor) -> Tensor:
        return torch.sign(x)

    def correlation_duals(self, corr, std1, std2, derivative=True):
        # (2/pi) arcsin c = (2/pi) J_0(c) - 1
        q = _mul(arccos_j(corr, 0), 2.0 / math.pi) - 1.0
        q = _times_outer(q, (std1 > 0).to(q.dtype), (std2 > 0).to(q.dtype))
        return q, (torch.zeros_like(q) if derivative else None)

    def variance(self, var):
        return (var > 0).to(var.dtype)

    def derivative_variance(self, var):
        return torch.zeros_like(var)


# --------------------------------------------------------------------------- smooth activations


@register_activation("erf")
@dataclass(frozen=True)
class Erf(Activation):
    r""":math:`\phi(u) = a\,\mathrm{erf}(b u) + c` (neural-tangents' ``Erf(a, b, c)``; Williams, 1996).

    :math:`\mathrm{erf}(bu)` of :math:`u \sim \mathcal N(0, \Sigma)` is :math:`\mathrm{erf}` of a
    Gaussian with covariance :math:`b^2\Sigma`, and :math:`\mathbb E\,\mathrm{erf}(bu) = 0` (odd),
    so with :math:`s = b^2` Williams' arcsine formula gives

    .. math::
        \mathbb E[\phi\phi] = \frac{2a^2}{\pi}\arcsin\frac{2s\Sigma_{xy}}{\sqrt{(1+2s\Sigma_{xx})(1+2s\Sigma_{yy})}} + c^2,

    and, from :math:`\phi'(u) = \tfrac{2ab}{\sqrt\pi}e^{-b^2u^2}` (or Price's theorem on the above),

    .. math::
        \mathbb E[\phi'\phi'] = \frac{4a^2 s}{\pi}\big[(1+2s\Sigma_{xx})(1+2s\Sigma_{yy}) - 4s^2\Sigma_{xy}^2\big]^{-1/2}.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        _set(self, **{k: _finite_real("Erf", k, getattr(self, k)) for k in ("a", "b", "c")})

    @classmethod
    def examples(cls):
        return (cls(), cls(0.7, 1.6, 0.3), cls(-1.2, 0.4, -0.5))

    def stax_layer(self):
        return "Erf", {"a": self.a, "b": self.b, "c": self.c}

    def __call__(self, x: Tensor) -> Tensor:
        return self.a * torch.erf(self.b * x) + self.c

    def dual(self, var1, cov, var2):
        s = self.b * self.b
        z = (2.0 * s) * cov * torch.rsqrt((1.0 + 2.0 * s * var1) * (1.0 + 2.0 * s * var2))
        q = (2.0 * self.a * self.a / math.pi) * _asin(torch.clamp(z, -1.0, 1.0))
        return q + self.c * self.c if self.c else q

    def derivative_dual(self, var1, cov, var2):
        # (1+2s a)(1+2s b) - 4s^2 c^2 = 1 + 2s(a + b) + 4s^2(ab - c^2) >= 1 for a valid covariance.
        s = self.b * self.b
        det = 1.0 + (2.0 * s) * (var1 + var2) + (4.0 * s * s) * gram_determinant(var1, cov, var2)
        return (4.0 * self.a * self.a * s / math.pi) * torch.rsqrt(det)

    def duals(self, var1, cov, var2, derivative=True):
        return self.dual(var1, cov, var2), (self.derivative_dual(var1, cov, var2) if derivative else None)

    def variance(self, var):
        s = self.b * self.b
        q = (2.0 * self.a * self.a / math.pi) * _asin(2.0 * s * var / (1.0 + 2.0 * s * var))
        return q + self.c * self.c if self.c else q

    def derivative_variance(self, var):
        s = self.b * self.b
        return (4.0 * self.a * self.a * s / math.pi) * torch.rsqrt(1.0 + 4.0 * s * var)


@register_activation("gelu")
@dataclass(frozen=True)
class GELU(Activation):
    r""":math:`\phi(u) = u\,\Phi(u)` with :math:`\Phi` the standard normal CDF (exact GELU,
    neural-tangents' ``Gelu(approximate=False)``).

    With :math:`k = \sqrt{(1+\Sigma_{xx})(1+\Sigma_{yy})}` and :math:`\Delta = k^2 - \Sigma_{xy}^2`:

    .. math::
        \mathbb E[\phi'\phi'] = \frac14 + \frac{1}{2\pi}\Big[\arcsin\frac{\Sigma_{xy}}{k}
            + \frac{\Sigma_{xy}}{\sqrt\Delta}\Big(\frac{1}{1+\Sigma_{xx}} + \frac{1}{1+\Sigma_{yy}}\Big)
            + \frac{\Sigma_{xy}}{\Delta^{3/2}}\Big]

    and :math:`\mathbb E[\phi\phi]` is its integral in :math:`\Sigma_{xy}` from
    :math:`\mathbb E[\phi(u)]\mathbb E[\phi(v)] = \Sigma_{xx}\Sigma_{yy}/(2\pi k)` (Price's theorem):

    .. math::
        \mathbb E[\phi\phi] = \frac{\Sigma_{xx}\Sigma_{yy}}{2\pi k} + \frac{\Sigma_{xy}}{4}
            + \frac{1}{2\pi}\Big[\Sigma_{xy}\arcsin\frac{\Sigma_{xy}}{k}
            - (k - \sqrt\Delta)\Big(1 - \frac{1}{1+\Sigma_{xx}} - \frac{1}{1+\Sigma_{yy}}\Big)
            + \frac1{\sqrt\Delta} - \frac1k\Big].
    """

    def stax_layer(self):
        return "Gelu", {"approximate": False}

    def __call__(self, x: Tensor) -> Tensor:
        return torch.nn.functional.gelu(x)

    def duals(self, var1, cov, var2, derivative=True):
        a1, b1 = 1.0 + var1, 1.0 + var2
        k = torch.sqrt(a1) * torch.sqrt(b1)
        root_delta = torch.sqrt(1.0 + (var1 + var2) + gram_determinant(var1, cov, var2))
        asin = _asin(torch.clamp(cov / k, -1.0, 1.0))
        inv_sum = 1.0 / a1 + 1.0 / b1
        # k - sqrt(Delta) = cov^2 / (k + sqrt(Delta)) avoids cancellation for small cov.
        k_minus_root = cov * (cov / (k + root_delta))
        q = (
            (var1 / torch.sqrt(a1)) * (var2 / torch.sqrt(b1)) / _TWO_PI
            + 0.25 * cov
            + (cov * asin - k_minus_root * (1.0 - inv_sum) + k_minus_root / k / root_delta) / _TWO_PI
        )
        if not derivative:
            return q, None
        ratio = cov / root_delta
        q_dot = 0.25 + (asin + ratio * inv_sum + ratio / root_delta / root_delta) / _TWO_PI
        return q, q_dot

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2)[1]


def _half_exp_pair(var1: Tensor, cov: Tensor, var2: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    # E[cos(b(u - v))] / 2 and E[cos(b(u + v))] / 2 for b^2 = scale; the exponents are
    # -b^2 Var(u -+ v) / 2 <= 0 (clamped: rounding must not make a variance negative).
    total = var1 + var2
    minus = 0.5 * torch.exp((-0.5 * scale) * torch.clamp(total - 2.0 * cov, min=0.0))
    plus = 0.5 * torch.exp((-0.5 * scale) * torch.clamp(total + 2.0 * cov, min=0.0))
    return minus, plus


@register_activation("sin")
@dataclass(frozen=True)
class Sin(Activation):
    r""":math:`\phi(u) = a\sin(b u + c)` (neural-tangents' ``Sin(a, b, c)``).

    From :math:`\sin x\sin y = \tfrac12[\cos(x - y) - \cos(x + y)]` and the Gaussian
    characteristic function :math:`\mathbb E\cos(t^\top w + \gamma) = \cos\gamma\,e^{-t^\top\Sigma t/2}`,
    with :math:`s = b^2`, :math:`m_\mp = \tfrac12 e^{-s(\Sigma_{xx}+\Sigma_{yy}\mp2\Sigma_{xy})/2}`:

    .. math::
        \mathbb E[\phi\phi] = a^2\big(m_- - \cos(2c)\,m_+\big),\qquad
        \mathbb E[\phi'\phi'] = a^2 s\big(m_- + \cos(2c)\,m_+\big),

    the second from :math:`\phi' = ab\cos(bu + c)` and :math:`\cos x\cos y = \tfrac12[\cos(x-y) + \cos(x+y)]`.
    On the diagonal :math:`m_- = \tfrac12`, :math:`m_+ = \tfrac12 e^{-2s\Sigma}`.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, **{k: _finite_real(name, k, getattr(self, k)) for k in ("a", "b", "c")})

    @classmethod
    def examples(cls):
        return (cls(), cls(1.3, 0.7, 0.4), cls(0.5, 2.0, -1.0))

    def stax_layer(self):
        return type(self).__name__, {"a": self.a, "b": self.b, "c": self.c}

    def __call__(self, x: Tensor) -> Tensor:
        return self.a * torch.sin(self.b * x + self.c)

    def _phase_factor(self) -> float:
        """:math:`\\cos(2c)`, the factor of :math:`m_+` (the shift of :math:`\\cos` is exact here)."""
        return math.cos(2.0 * self.c)

    def _combine(self, minus: Tensor, plus: Tensor, sign: float, scale: float) -> Tensor:
        factor = sign * self._phase_factor()
        q = minus + factor * plus if factor != 1.0 else minus + plus
        return q * scale if scale != 1.0 else q

    def duals(self, var1, cov, var2, derivative=True):
        s, a2 = self.b * self.b, self.a * self.a
        minus, plus = _half_exp_pair(var1, cov, var2, s)
        q = self._combine(minus, plus, -1.0, a2)
        return q, (self._combine(minus, plus, 1.0, a2 * s) if derivative else None)

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        s = self.b * self.b
        minus, plus = _half_exp_pair(var1, cov, var2, s)
        return self._combine(minus, plus, 1.0, self.a * self.a * s)

    def variance(self, var):
        far = torch.exp((-2.0 * self.b * self.b) * var)
        return (0.5 * self.a * self.a) * (1.0 - self._phase_factor() * far)

    def derivative_variance(self, var):
        s = self.b * self.b
        far = torch.exp((-2.0 * s) * var)
        return (0.5 * self.a * self.a * s) * (1.0 + self._phase_factor() * far)


@register_activation("cos")
@dataclass(frozen=True)
class Cos(Sin):
    r""":math:`\phi(u) = a\cos(b u + c) = a\sin(bu + c + \pi/2)` (neural-tangents' ``Cos(a, b, c)``):
    the duals of :class:`Sin` with :math:`\cos(2c + \pi) = -\cos(2c)` in place of :math:`\cos(2c)`.
    """

    def __call__(self, x: Tensor) -> Tensor:
        return self.a * torch.cos(self.b * x + self.c)

    def _phase_factor(self) -> float:
        return -math.cos(2.0 * self.c)

    @classmethod
    def examples(cls):
        return (cls(), cls(0.8, 1.5, 0.3))


@register_activation("rbf")
@dataclass(frozen=True)
class Rbf(Activation):
    r""":math:`\phi(u) = \sqrt2\,\sin(\sqrt{2\gamma}\,u + \pi/4)` (neural-tangents' ``Rbf(gamma)``):
    :class:`Sin` with :math:`a = \sqrt2`, :math:`b^2 = 2\gamma`, :math:`c = \pi/4`, where
    :math:`\cos(2c) = 0` leaves

    .. math::
        \mathbb E[\phi\phi] = e^{-\gamma(\Sigma_{xx} + \Sigma_{yy} - 2\Sigma_{xy})},\qquad
        \mathbb E[\phi'\phi'] = 2\gamma\,e^{-\gamma(\Sigma_{xx} + \Sigma_{yy} - 2\Sigma_{xy})}.

    After a first layer :math:`\Sigma = \sigma_w^2 x^\top y/d` this is the RBF kernel
    :math:`e^{-\gamma\sigma_w^2\lVert x - y\rVert^2/d}`; the variance is 1.
    """

    gamma: float = 1.0

    def __post_init__(self) -> None:
        gamma = _finite_real("Rbf", "gamma", self.gamma)
        if gamma < 0:
            raise ValueError(f"Rbf: gamma must be a finite real number >= 0, got {self.gamma!r}")
        _set(self, gamma=gamma)

    @classmethod
    def examples(cls):
        return (cls(), cls(0.3))

    def stax_layer(self):
        return "Rbf", {"gamma": self.gamma}

    def __call__(self, x: Tensor) -> Tensor:
        return math.sqrt(2.0) * torch.sin(math.sqrt(2.0 * self.gamma) * x + 0.25 * math.pi)

    def _kernel(self, var1, cov, var2):
        return torch.exp(-self.gamma * torch.clamp(var1 + var2 - 2.0 * cov, min=0.0))

    def dual(self, var1, cov, var2):
        return self._kernel(var1, cov, var2)

    def derivative_dual(self, var1, cov, var2):
        return (2.0 * self.gamma) * self._kernel(var1, cov, var2)

    def duals(self, var1, cov, var2, derivative=True):
        q = self._kernel(var1, cov, var2)
        return q, ((2.0 * self.gamma) * q if derivative else None)

    def variance(self, var):
        return torch.ones_like(var)

    def derivative_variance(self, var):
        return torch.full_like(var, 2.0 * self.gamma)


def _largest(*tensors: Tensor) -> float:
    """The largest finite entry among ``tensors`` (for error messages)."""
    values = [t.detach()[torch.isfinite(t.detach())] for t in tensors]
    values = [v.max() for v in values if v.numel()]
    return float(max(values)) if values else float("nan")


@register_activation("exp")
@dataclass(frozen=True)
class Exp(Activation):
    r""":math:`\phi(u) = a\,e^{b u}` (neural-tangents' ``Exp(a, b)``).

    :math:`b(u + v)` is Gaussian with variance :math:`b^2(\Sigma_{xx} + \Sigma_{yy} + 2\Sigma_{xy})`,
    and :math:`\mathbb E e^w = e^{\operatorname{Var} w/2}`, so with :math:`s = b^2`

    .. math::
        \mathbb E[\phi\phi] = a^2\exp\!\big(s(\Sigma_{xx} + \Sigma_{yy} + 2\Sigma_{xy})/2\big),\qquad
        \mathbb E[\phi'\phi'] = s\,\mathbb E[\phi\phi]

    (:math:`\phi' = b\phi`); the variance is :math:`a^2 e^{2s\Sigma}`. The dual grows like
    :math:`e^{2s\Sigma}`, and over layers like an iterated exponential: a value beyond the
    dtype's range raises a ``FloatingPointError`` saying so instead of returning ``inf``.
    """

    a: float = 1.0
    b: float = 1.0

    def __post_init__(self) -> None:
        _set(self, a=_finite_real("Exp", "a", self.a), b=_finite_real("Exp", "b", self.b))

    @classmethod
    def examples(cls):
        return (cls(), cls(0.5, -0.6), cls(1.5, 0.4))

    def stax_layer(self):
        return "Exp", {"a": self.a, "b": self.b}

    def __call__(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x)

    def _checked(self, q: Tensor, *inputs: Tensor) -> Tensor:
        # inf only arises from overflow here (NaN inputs stay NaN); compiled graphs hand it on
        # to the kernels' own finiteness check instead of breaking on a data-dependent branch
        if _eager() and bool(torch.isinf(q).any()):
            raise FloatingPointError(
                f"{self!r}: E[phi(u)phi(v)] = a^2 exp(b^2 (Sigma_xx + Sigma_yy + 2 Sigma_xy) / 2) overflows "
                f"{q.dtype} (pre-activation variance up to {_largest(*inputs):.4g}); use "
                f"{'' if q.dtype == torch.float64 else 'float64, '}a smaller |b|, weight variance or depth"
            )
        return q

    def duals(self, var1, cov, var2, derivative=True):
        s = self.b * self.b
        q = self._checked((self.a * self.a) * torch.exp((0.5 * s) * (var1 + var2 + 2.0 * cov)), var1, var2)
        return q, (self._checked(s * q, var1, var2) if derivative else None)

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2)[1]

    def variance(self, var):
        return self._checked((self.a * self.a) * torch.exp((2.0 * self.b * self.b) * var), var)

    def derivative_variance(self, var):
        return self._checked((self.b * self.b) * self.variance(var), var)


@register_activation("gaussian")
@dataclass(frozen=True)
class Gaussian(Activation):
    r""":math:`\phi(u) = a\,e^{b u^2}` (neural-tangents' ``Gaussian(a, b)``, default :math:`b = -1`).

    For :math:`w = (u, v) \sim \mathcal N(0, \Sigma)`,
    :math:`\mathbb E\,e^{b\,w^\top w} = \det(I - 2b\Sigma)^{-1/2}` whenever :math:`I - 2b\Sigma` is
    positive definite (always for :math:`b \le 0`), so with
    :math:`D = \det(I - 2b\Sigma) = 1 - 2b(\Sigma_{xx} + \Sigma_{yy}) + 4b^2(\Sigma_{xx}\Sigma_{yy} - \Sigma_{xy}^2)`

    .. math::
        \mathbb E[\phi\phi] = a^2 D^{-1/2},\qquad
        \mathbb E[\phi'\phi'] = \frac{\partial}{\partial\Sigma_{xy}} a^2 D^{-1/2} = 4a^2b^2\,\Sigma_{xy}\,D^{-3/2}

    (Price's theorem; :math:`\partial D/\partial\Sigma_{xy} = -8b^2\Sigma_{xy}`). On the diagonal
    :math:`D = 1 - 4b\Sigma`. For :math:`b > 0` the expectation is infinite unless every
    pre-activation variance is below :math:`1/(4b)`; beyond that the duals raise a
    ``FloatingPointError`` saying so.
    """

    a: float = 1.0
    b: float = -1.0

    def __post_init__(self) -> None:
        _set(self, a=_finite_real("Gaussian", "a", self.a), b=_finite_real("Gaussian", "b", self.b))

    @classmethod
    def examples(cls):
        return (cls(), cls(0.8, -0.3), cls(1.2, 0.05))

    def stax_layer(self):
        return "Gaussian", {"a": self.a, "b": self.b}

    def __call__(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x * x)

    def _determinant(self, var1, cov, var2) -> Tensor:
        b = self.b
        det = 1.0 - (2.0 * b) * (var1 + var2) + (4.0 * b * b) * gram_determinant(var1, cov, var2)
        if b <= 0:
            return det
        # I - 2b Sigma is positive definite iff its determinant and its trace are positive
        valid = (det > 0) & (1.0 - b * (var1 + var2) > 0)
        if _eager() and not bool(valid.all()):
            raise FloatingPointError(
                f"{self!r}: E[exp(b u^2 + b v^2)] is infinite for b > 0 unless every pre-activation "
                f"variance is below 1/(4b) = {0.25 / b:.4g}; got variances up to {_largest(var1, var2):.4g}. "
                "Use b <= 0 or smaller weight variances, inputs or depth"
            )
        return torch.where(valid, det, torch.zeros_like(det))  # 0 -> an infinite dual when compiled

    def duals(self, var1, cov, var2, derivative=True):
        root = torch.rsqrt(self._determinant(var1, cov, var2))
        q = (self.a * self.a) * root
        if not derivative:
            return q, None
        return q, (4.0 * self.b * self.b) * cov * q * root * root

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2)[1]

    def variance(self, var):
        return self.dual(var, var, var)

    def derivative_variance(self, var):
        return self.derivative_dual(var, var, var)


def _hermite_terms(coef: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    r"""Coefficients of :math:`m!^{1/2} g_m(q)`, :math:`m = 0 \dots n`, for
    :math:`\phi(x) = \sum_i a_i x^i`: :math:`g_m(q) = \sum_j a_{m+2j}\frac{(m+2j)!}{j!\,m!\,2^j} q^j`
    (see :class:`Polynomial`)."""
    terms = []
    for m in range(len(coef)):
        root_factorial = math.sqrt(math.factorial(m))
        terms.append(
            tuple(
                coef[m + 2 * j]
                * (math.factorial(m + 2 * j) // (math.factorial(j) * math.factorial(m)))
                / 2.0**j
                * root_factorial
                for j in range((len(coef) - 1 - m) // 2 + 1)
            )
        )
    return tuple(terms)


def _horner(coefficients: Sequence[float], x: Tensor) -> Tensor | float:
    result: Tensor | float = coefficients[-1]
    for value in reversed(coefficients[:-1]):
        result = result * x + value
    return result


def _polynomial_dual(terms: tuple[tuple[float, ...], ...], var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
    # sum_m cov^m (sqrt(m!) g_m(var1)) (sqrt(m!) g_m(var2)) by Horner's rule in cov
    result: Tensor | float = 0.0
    for term in reversed(terms):
        result = result * cov + _horner(term, var1) * _horner(term, var2)
    if not isinstance(result, Tensor):
        result = torch.full_like(cov, result)
    return torch.broadcast_to(result, torch.broadcast_shapes(var1.shape, cov.shape, var2.shape))


def _derivative_coefficients(coef: Sequence[float]) -> tuple[float, ...]:
    return tuple(i * coef[i] for i in range(1, len(coef))) or (0.0,)


@register_activation()
@dataclass(frozen=True)
class Polynomial(Activation):
    r""":math:`\phi(x) = \sum_{i=0}^n a_i x^i`, ``coef`` = :math:`(a_0, \dots, a_n)` (neural-tangents'
    ``Polynomial(coef)``, NumPy's coefficient order).

    Write :math:`u = \sqrt{\Sigma_{xx}}\,z_1`, :math:`v = \sqrt{\Sigma_{yy}}\,z_2` with standard
    :math:`z_1, z_2` of correlation :math:`\rho`, and expand in probabilists' Hermite polynomials,
    :math:`x^i = \sum_j \frac{i!}{j!\,(i-2j)!\,2^j}\mathrm{He}_{i-2j}(x)`. Then
    :math:`\phi(\sqrt q\,z) = \sum_m q^{m/2} g_m(q)\,\mathrm{He}_m(z)` with
    :math:`g_m(q) = \sum_j a_{m+2j}\frac{(m+2j)!}{j!\,m!\,2^j}q^j`, and Mehler's
    :math:`\mathbb E[\mathrm{He}_m(z_1)\mathrm{He}_k(z_2)] = \delta_{mk}\,m!\,\rho^m` gives, since
    :math:`(\Sigma_{xx}\Sigma_{yy})^{m/2}\rho^m = \Sigma_{xy}^m`,

    .. math::
        \mathbb E[\phi(u)\phi(v)] = \sum_{m=0}^n m!\,\Sigma_{xy}^m\,g_m(\Sigma_{xx})\,g_m(\Sigma_{yy}),

    a polynomial in the covariances (no square roots). The derivative dual is the same formula
    for :math:`\phi'` (coefficients :math:`i a_i`).
    """

    coef: tuple[float, ...] = (0.0, 1.0)
    _terms: tuple = field(init=False, repr=False, compare=False)
    _derivative_terms: tuple = field(init=False, repr=False, compare=False)

    _MAX_DEGREE: ClassVar[int] = 64

    def __post_init__(self) -> None:
        coef = self.coef
        if isinstance(coef, (Tensor, np.ndarray)):
            coef = coef.tolist()
        if isinstance(coef, (str, bytes)) or not isinstance(coef, Sequence) or not 1 <= len(coef) <= 65:
            raise ValueError(
                f"Polynomial: coef must be a sequence of 1 to {self._MAX_DEGREE + 1} finite real numbers "
                f"(a_0, a_1, ...), got {self.coef!r}"
            )
        coef = tuple(_finite_real("Polynomial", f"coef[{i}]", value) for i, value in enumerate(coef))
        self._set_terms(coef)
        _set(self, coef=coef)

    def _set_terms(self, coef: tuple[float, ...]) -> None:
        _set(
            self,
            _terms=_hermite_terms(coef),
            _derivative_terms=_hermite_terms(_derivative_coefficients(coef)),
        )

    @classmethod
    def examples(cls):
        return (
            cls((0.5, -1.0, 0.3)),
            cls((0.1, 0.0, 0.0, 0.2)),
            cls((1.0,)),
            cls((0.2, 0.5, -0.1, 0.05, 0.02)),
        )

    def stax_layer(self):
        return "Polynomial", {"coef": list(self.coef)}

    def __call__(self, x: Tensor) -> Tensor:
        value = _horner(self.coef, x)
        return value if isinstance(value, Tensor) else torch.full_like(x, value)

    def dual(self, var1, cov, var2):
        return _polynomial_dual(self._terms, var1, cov, var2)

    def derivative_dual(self, var1, cov, var2):
        return _polynomial_dual(self._derivative_terms, var1, cov, var2)

    def duals(self, var1, cov, var2, derivative=True):
        return self.dual(var1, cov, var2), (self.derivative_dual(var1, cov, var2) if derivative else None)


@register_activation()
@dataclass(frozen=True)
class Monomial(Activation):
    r""":math:`\phi(x) = x^n`, ``degree`` = :math:`n` (neural-tangents' ``Monomial(degree)``).

    :class:`Polynomial` with one coefficient: only :math:`m = n - 2j` contributes, and

    .. math::
        \mathbb E[u^n v^n] = \sum_{j=0}^{\lfloor n/2\rfloor}
            \Big(\frac{n!}{j!\,(n-2j)!\,2^j}\Big)^2 (n-2j)!\;\Sigma_{xy}^{\,n-2j}\,(\Sigma_{xx}\Sigma_{yy})^j,
        \qquad \mathbb E[\phi'\phi'] = n^2\,\mathbb E[u^{n-1}v^{n-1}],

    e.g. :math:`\Sigma_{xy}^2 \cdot 2 + \Sigma_{xx}\Sigma_{yy}` for :math:`n = 2`; the variance is
    :math:`(2n-1)!!\,\Sigma^n`.
    """

    degree: int = 1
    _terms: tuple = field(init=False, repr=False, compare=False)
    _derivative_terms: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        degree = _integer("Monomial", "degree", self.degree, 0, Polynomial._MAX_DEGREE)
        coef = (0.0,) * degree + (1.0,)
        _set(
            self,
            degree=degree,
            _terms=_hermite_terms(coef),
            _derivative_terms=_hermite_terms(_derivative_coefficients(coef)),
        )

    @classmethod
    def examples(cls):
        return tuple(cls(n) for n in range(6))

    @property
    def homogeneity_degree(self) -> float:  # type: ignore[override]
        return float(self.degree)

    def stax_layer(self):
        return ("Monomial", {"degree": self.degree}) if self.degree <= 5 else None

    def __call__(self, x: Tensor) -> Tensor:
        return x**self.degree

    def dual(self, var1, cov, var2):
        return _polynomial_dual(self._terms, var1, cov, var2)

    def derivative_dual(self, var1, cov, var2):
        return _polynomial_dual(self._derivative_terms, var1, cov, var2)

    def duals(self, var1, cov, var2, derivative=True):
        return self.dual(var1, cov, var2), (self.derivative_dual(var1, cov, var2) if derivative else None)

    def variance(self, var):
        return double_factorial(2 * self.degree - 1) * var**self.degree

    def derivative_variance(self, var):
        n = self.degree
        if n == 0:
            return torch.zeros_like(var)
        return n * n * double_factorial(2 * n - 3) * var ** (n - 1)


# --------------------------------------------------------------------------- any activation


def _elementwise_derivative(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """phi'(x) by autograd; stays differentiable in x when x carries a graph."""
    with torch.enable_grad():
        track = x.requires_grad
        x_in = x if track else x.detach().requires_grad_(True)
        y = fn(x_in)
        if not y.requires_grad:  # piecewise constant through non-differentiable ops: 0 a.e.
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(y, x_in, torch.ones_like(y), create_graph=track, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


_PROBE_SIZE = 24


def _probe_outputs(fn: Callable[[Tensor], Tensor], dtype: torch.dtype) -> tuple[Tensor, ...]:
    """``fn`` on a 4 x 6 grid of values in [-3, 3], on the same values permuted into a 3 x 8
    grid, and one value at a time: an elementwise function gives the same numbers each way."""
    values = torch.linspace(-3.0, 3.0, _PROBE_SIZE, dtype=dtype)
    permutation = torch.randperm(_PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    grid = fn(values.reshape(4, 6))
    if not isinstance(grid, Tensor) or grid.shape != (4, 6):
        shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(
            f"Numerical: fn must be elementwise, mapping a tensor to one of the same shape; it maps a "
            f"(4, 6) tensor to {shape}"
        )
    permuted = fn(values[permutation].reshape(3, 8))
    singles = torch.stack([torch.as_tensor(fn(v.reshape(1))).reshape(()) for v in values])
    return values, grid.reshape(-1), permuted.reshape(-1), singles.to(grid.dtype), permutation


def _check_elementwise(fn: Callable[[Tensor], Tensor]) -> None:
    """Refuse ``fn`` unless it is a finite elementwise function (what the quadrature assumes)."""
    try:
        values, grid, permuted, singles, permutation = _probe_outputs(fn, torch.float64)
    except ValueError:
        raise
    except Exception as first_error:  # e.g. float32-only modules: try their dtype
        try:
            values, grid, permuted, singles, permutation = _probe_outputs(fn, torch.float32)
        except ValueError:
            raise
        except Exception:
            raise ValueError(
                f"Numerical: fn could not be evaluated on a tensor ({type(first_error).__name__}: {first_error})"
            ) from first_error
    grid, permuted, singles = grid.to(values.dtype), permuted.to(values.dtype), singles.to(values.dtype)
    bad = ~torch.isfinite(grid)
    if bad.any():
        x = float(values[bad.nonzero()[0, 0]])
        raise ValueError(
            f"Numerical: fn must be finite on the whole real line (the duals integrate it against a "
            f"Gaussian); fn({x:.4g}) = {float(grid[bad][0])}"
        )
    tolerance = dict(
        rtol=1e-6 if values.dtype == torch.float32 else 1e-10, atol=1e-6 * (1.0 + float(grid.abs().max()))
    )
    if not (
        torch.allclose(permuted, grid[permutation], **tolerance)
        and torch.allclose(singles, grid, **tolerance)
    ):
        raise ValueError(
            "Numerical: fn must be elementwise (each output entry a function of the same input entry "
            "alone); its values change when the other entries of the input change (e.g. x - x.mean(), "
            "a softmax or a normalisation)"
        )


@register_activation()
@dataclass(frozen=True)
class Numerical(CorrelationActivation):
    r"""Any elementwise torch function, its duals by Gauss–Hermite quadrature.

    .. math::
        \mathbb E[\phi(u)\phi(v)] \approx \sum_{k,l} w_k w_l\,
            \phi\big(\sqrt{\Sigma_{xx}}\,z_k\big)\,
            \phi\big(\sqrt{\Sigma_{yy}}\,(c z_k + \sqrt{1-c^2}\,z_l)\big)

    on the ``degree``-point probabilists' Gauss–Hermite rule :math:`(z_k, w_k)` (weights
    summing to 1, built once at construction), :math:`c` the correlation; :math:`\phi'` comes
    from autograd and goes through the same rule, averaged over both orders of :math:`(u, v)`.
    The rule is exact for polynomials of degree :math:`2\,\text{degree}-1` in each variable, so
    smooth activations converge fast; kinks (ReLU-like) converge algebraically. Measured
    accuracies are in ``docs/kernels.md``.

    ``fn`` must be elementwise, finite on the real line and picklable (a torch function such as
    ``torch.tanh`` or a module-level function; not a lambda) for the kernel to pickle. The
    constructor checks the first two on a probe (a grid of values, the same values permuted,
    and one at a time) and refuses e.g. ``lambda x: x - x.mean()``, a softmax or ``torch.log``.
    Cost: ``2 * degree**2`` evaluations of ``fn`` on an n x m tensor per layer and dual.
    """

    fn: Callable[[Tensor], Tensor] = torch.tanh
    degree: int = 32
    _nodes: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _weights: tuple[float, ...] = field(init=False, repr=False, compare=False)

    exact: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValueError(f"Numerical: fn must be a callable elementwise function, got {self.fn!r}")
        # numpy's Hermite rule overflows to NaN weights from degree ~370
        degree = _integer("Numerical", "degree", self.degree, 2, 256)
        _check_elementwise(self.fn)
        nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
        weights = weights / weights.sum()
        _set(self, degree=degree, _nodes=tuple(nodes.tolist()), _weights=tuple(weights.tolist()))

    @classmethod
    def examples(cls):
        return (cls(torch.tanh, degree=32),)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        return f"Numerical(fn={name}, degree={self.degree})"

    def _quadrature(self, corr, std1, std2, transform) -> Tensor:
        # u and v play different roles in the product rule, so its error is not symmetric in
        # (std1, std2); averaging both orders makes k(X, X) exactly symmetric and every
        # cross-covariance block agree with the joint matrix.
        forward = self._ordered_quadrature(corr, std1, std2, transform)
        return 0.5 * (forward + self._ordered_quadrature(corr, std2, std1, transform))

    def _ordered_quadrature(self, c, sd1, sd2, transform) -> Tensor:
        # The sum over the symmetric nodes z_l is even in s, hence smooth in c at |c| = 1;
        # the masked root keeps autograd from forming inf * 0 there.
        s = _masked_sqrt(1.0 - c * c)
        total = torch.zeros_like(c)
        for zk, wk in zip(self._nodes, self._weights):
            left = transform(sd1 * zk)
            inner = torch.zeros_like(c)
            for zl, wl in zip(self._nodes, self._weights):
                inner = inner + wl * transform(sd2 * (c * zk + s * zl))
            total = total + wk * left * inner
        return total

    def _derivative(self, x: Tensor) -> Tensor:
        return _elementwise_derivative(self.fn, x)

    def correlation_duals(self, corr, std1, std2, derivative=True):
        q = self._quadrature(corr, std1, std2, self.fn)
        return q, (self._quadrature(corr, std1, std2, self._derivative) if derivative else None)

    def _variance(self, var, transform) -> Tensor:
        sd = _masked_sqrt(var)
        total = torch.zeros_like(var)
        for z, w in zip(self._nodes, self._weights):
            total = total + w * transform(sd * z) ** 2
        return total

    def variance(self, var):
        return self._variance(var, self.fn)

    def derivative_variance(self, var):
        return self._variance(var, self._derivative)


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
