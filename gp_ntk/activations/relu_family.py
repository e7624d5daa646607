r"""Positively homogeneous activations: the ReLU family, the identity and Cho & Saul's rectified monomials."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..ops import (
    arccos_j,
    arccos_j_pair,
    double_factorial,
    mul_temporary,
)
from .base import (
    _TWO_PI,
    Activation,
    CorrelationActivation,
    _finite_real,
    _set,
    _times_outer,
    register_activation,
)

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
        q = mul_temporary(j1, (sq - cross) / _TWO_PI)
        if cross:
            q = torch.add(q, corr, alpha=cross * math.pi / _TWO_PI)
        q = _times_outer(q, std1, std2)
        if not derivative:
            return q, None
        q_dot = mul_temporary(j0, (sq - cross) / _TWO_PI)
        return q, (q_dot + cross * math.pi / _TWO_PI if cross else q_dot)

    def relu_family_coefficients(self) -> tuple[float, float]:
        r"""``(alpha, beta)`` with :math:`\mathbb E[\phi\phi] = s_1 s_2(\alpha J_1(c) + \beta c)` and
        :math:`\mathbb E[\phi'\phi'] = \alpha J_0(c) + \beta`, which
        ``gp_ntk.ops.relu_family.relu_family_recursion`` evaluates with a closed-form backward pass."""
        sq, cross = self.a**2 + self.b**2, 2.0 * self.a * self.b
        return (sq - cross) / _TWO_PI, cross * math.pi / _TWO_PI

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
        q = mul_temporary(j_n, 1.0 / _TWO_PI)
        if n > 0:
            q = _times_outer(q, std1**n, std2**n)
        if not derivative:
            return q, None
        if n == 0:
            return q, torch.zeros_like(q)
        q_dot = mul_temporary(j_lower, n * n / _TWO_PI)
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
