r"""Elementwise activations and their dual kernels.

Each activation :math:`\phi` is one small, stateless, picklable value that supplies

* ``__call__(x)``: :math:`\phi(x)` itself (used to build finite networks, e.g. in tests);
* ``dual(var1, cov, var2)``: :math:`\mathbb E[\phi(u)\phi(v)]`;
* ``derivative_dual(var1, cov, var2)``: :math:`\mathbb E[\phi'(u)\phi'(v)]`;
* ``variance(var)`` / ``derivative_variance(var)``: the same at :math:`u = v`, in O(n),

for :math:`(u, v) \sim \mathcal N\big(0, \begin{bmatrix}\Sigma_{xx} & \Sigma_{xy}\\ \Sigma_{xy} & \Sigma_{yy}\end{bmatrix}\big)`,
where ``var1`` = :math:`\Sigma_{xx}`, ``cov`` = :math:`\Sigma_{xy}`, ``var2`` = :math:`\Sigma_{yy}`
broadcast against each other. The layer recursion in :mod:`gp_ntk.functional` knows nothing
else about an activation, so adding one means adding one class here (and, to give it a
name, one entry in :data:`ACTIVATIONS`).

Derivatives are taken almost everywhere, as autograd takes them: the step function has
:math:`\phi' = 0`, so its NTK contribution through the derivative dual vanishes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

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
    "GELU",
    "Identity",
    "LeakyReLU",
    "Numerical",
    "ReLU",
    "Sin",
    "Step",
    "ACTIVATIONS",
    "get_activation",
]

_TWO_PI = 2.0 * math.pi


class Activation:
    """Base class: an elementwise nonlinearity with Gaussian dual kernels.

    Subclasses implement :meth:`dual` and :meth:`derivative_dual` (and :meth:`__call__`), or
    :meth:`duals` where the two share work; the O(n) variances follow unless a closed form is
    cheaper.
    """

    #: ``r`` such that ``phi(a u) = a**r phi(u)`` for ``a > 0``; ``None`` if not homogeneous.
    homogeneity_degree: float | None = None

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def dual(self, var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative_dual(self, var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
        raise NotImplementedError

    def variance(self, var: Tensor) -> Tensor:
        return self.dual(var, var, var)

    def derivative_variance(self, var: Tensor) -> Tensor:
        return self.derivative_dual(var, var, var)

    def duals(
        self, var1: Tensor, cov: Tensor, var2: Tensor, derivative: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Both duals at once; activations override this where the two share work."""
        q = self.dual(var1, cov, var2)
        return q, (self.derivative_dual(var1, cov, var2) if derivative else None)


class CorrelationActivation(Activation):
    r"""An activation whose duals are most simply written in the correlation
    :math:`c = \Sigma_{xy}/\sqrt{\Sigma_{xx}\Sigma_{yy}}` and the standard deviations.

    Subclasses implement :meth:`correlation_duals`. The layer recursion computes the
    correlation once per layer and calls it directly (with the diagonal of a symmetric
    matrix exactly 1); :meth:`duals` computes the correlation first.
    """

    def correlation_duals(
        self, corr: Tensor, std1: Tensor, std2: Tensor, derivative: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """The duals from ``corr`` (n x m) and ``std1``, ``std2`` (broadcastable to it)."""
        raise NotImplementedError

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


# --------------------------------------------------------------------------- ReLU family


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


@dataclass(frozen=True)
class ReLU(ABReLU):
    r""":math:`\phi(u) = \max(u, 0)`: :math:`\mathbb E[\phi\phi] = \tfrac{1}{2\pi}\sqrt{\Sigma_{xx}\Sigma_{yy}}\,J_1(\theta)`, :math:`\mathbb E[\phi'\phi'] = \tfrac{\pi - \theta}{2\pi}`."""

    a: float = field(default=0.0, init=False)
    b: float = field(default=1.0, init=False)

    def __repr__(self) -> str:
        return "ReLU()"


@dataclass(frozen=True)
class LeakyReLU(ABReLU):
    r""":math:`\phi(u) = \max(u, 0) + \text{slope}\cdot\min(u, 0)` (``ABReLU(slope, 1)``)."""

    slope: float = 0.01
    a: float = field(default=0.0, init=False)
    b: float = field(default=1.0, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", float(self.slope))

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


@dataclass(frozen=True)
class Abs(ABReLU):
    r""":math:`\phi(u) = |u|` (``ABReLU(-1, 1)``): :math:`\mathbb E[\phi'\phi'] = \tfrac{2}{\pi}\arcsin c`."""

    a: float = field(default=-1.0, init=False)
    b: float = field(default=1.0, init=False)

    def __repr__(self) -> str:
        return "Abs()"


@dataclass(frozen=True)
class Identity(Activation):
    r""":math:`\phi(u) = u`: :math:`\mathbb E[\phi\phi] = \Sigma_{xy}`, :math:`\mathbb E[\phi'\phi'] = 1`."""

    homogeneity_degree = 1.0

    def __call__(self, x: Tensor) -> Tensor:
        return x

    def dual(self, var1, cov, var2):
        return cov

    def derivative_dual(self, var1, cov, var2):
        return torch.ones_like(cov)

    def variance(self, var):
        return var


@dataclass(frozen=True)
class ArcCos(CorrelationActivation):
    r"""Rectified monomial :math:`\phi(u) = \Theta(u)\,u^n` of Cho & Saul (2009).

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
        if isinstance(self.order, bool) or not isinstance(self.order, (int, np.integer)):
            raise ValueError(f"order must be a non-negative integer, got {self.order!r}")
        if self.order < 0:
            raise ValueError(f"order must be a non-negative integer, got {self.order}")
        object.__setattr__(self, "order", int(self.order))

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


@dataclass(frozen=True)
class Step(ArcCos):
    r"""Heaviside step :math:`\Theta(u)` (``ArcCos(0)``): :math:`\mathbb E[\phi\phi] = \tfrac{\pi-\theta}{2\pi}`, derivative dual 0."""

    order: int = field(default=0, init=False)

    def __repr__(self) -> str:
        return "Step()"


# --------------------------------------------------------------------------- smooth activations


def _asin(z: Tensor) -> Tensor:
    # arcsin(z) = J_0(z) - pi/2, whose backward stays finite should |z| round to 1.
    return arccos_j(z, 0) - 0.5 * math.pi


@dataclass(frozen=True)
class Erf(Activation):
    r""":math:`\phi(u) = \mathrm{erf}(u)` (Williams, 1996).

    .. math::
        \mathbb E[\phi\phi] = \frac{2}{\pi}\arcsin\frac{2\Sigma_{xy}}{\sqrt{(1+2\Sigma_{xx})(1+2\Sigma_{yy})}},\qquad
        \mathbb E[\phi'\phi'] = \frac{4}{\pi}\big[(1+2\Sigma_{xx})(1+2\Sigma_{yy}) - 4\Sigma_{xy}^2\big]^{-1/2}.
    """

    def __call__(self, x: Tensor) -> Tensor:
        return torch.erf(x)

    def dual(self, var1, cov, var2):
        z = 2.0 * cov * torch.rsqrt((1.0 + 2.0 * var1) * (1.0 + 2.0 * var2))
        return (2.0 / math.pi) * _asin(torch.clamp(z, -1.0, 1.0))

    def derivative_dual(self, var1, cov, var2):
        # (1+2a)(1+2b) - 4c^2 = 1 + 2a + 2b + 4(ab - c^2) >= 1 for a valid covariance.
        det = 1.0 + 2.0 * (var1 + var2) + 4.0 * gram_determinant(var1, cov, var2)
        return (4.0 / math.pi) * torch.rsqrt(det)

    def variance(self, var):
        return (2.0 / math.pi) * _asin(2.0 * var / (1.0 + 2.0 * var))

    def derivative_variance(self, var):
        return (4.0 / math.pi) * torch.rsqrt(1.0 + 4.0 * var)


@dataclass(frozen=True)
class GELU(Activation):
    r""":math:`\phi(u) = u\,\Phi(u)` with :math:`\Phi` the standard normal CDF (exact GELU).

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


def _half_exp_pair(var1: Tensor, cov: Tensor, var2: Tensor) -> tuple[Tensor, Tensor]:
    # E[cos(u - v)] / 2 and E[cos(u + v)] / 2; the exponents are -Var(u -+ v)/2 <= 0.
    total = var1 + var2
    minus = 0.5 * torch.exp(-0.5 * torch.clamp(total - 2.0 * cov, min=0.0))
    plus = 0.5 * torch.exp(-0.5 * torch.clamp(total + 2.0 * cov, min=0.0))
    return minus, plus


@dataclass(frozen=True)
class Sin(Activation):
    r""":math:`\phi(u) = \sin u`: :math:`\mathbb E[\phi\phi] = e^{-(\Sigma_{xx}+\Sigma_{yy})/2}\sinh\Sigma_{xy}`, :math:`\mathbb E[\phi'\phi'] = e^{-(\Sigma_{xx}+\Sigma_{yy})/2}\cosh\Sigma_{xy}`."""

    def __call__(self, x: Tensor) -> Tensor:
        return torch.sin(x)

    def duals(self, var1, cov, var2, derivative=True):
        minus, plus = _half_exp_pair(var1, cov, var2)
        return minus - plus, (minus + plus if derivative else None)

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        minus, plus = _half_exp_pair(var1, cov, var2)
        return minus + plus

    def variance(self, var):
        return 0.5 * (1.0 - torch.exp(-2.0 * var))

    def derivative_variance(self, var):
        return 0.5 * (1.0 + torch.exp(-2.0 * var))


@dataclass(frozen=True)
class Cos(Activation):
    r""":math:`\phi(u) = \cos u`: :math:`\mathbb E[\phi\phi] = e^{-(\Sigma_{xx}+\Sigma_{yy})/2}\cosh\Sigma_{xy}`, :math:`\mathbb E[\phi'\phi'] = e^{-(\Sigma_{xx}+\Sigma_{yy})/2}\sinh\Sigma_{xy}`."""

    def __call__(self, x: Tensor) -> Tensor:
        return torch.cos(x)

    def duals(self, var1, cov, var2, derivative=True):
        minus, plus = _half_exp_pair(var1, cov, var2)
        return minus + plus, (minus - plus if derivative else None)

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        minus, plus = _half_exp_pair(var1, cov, var2)
        return minus - plus

    def variance(self, var):
        return 0.5 * (1.0 + torch.exp(-2.0 * var))

    def derivative_variance(self, var):
        return 0.5 * (1.0 - torch.exp(-2.0 * var))


# --------------------------------------------------------------------------- any activation


def _elementwise_derivative(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """phi'(x) by autograd; stays differentiable in x when x carries a graph."""
    with torch.enable_grad():
        track = x.requires_grad
        x_in = x if track else x.detach().requires_grad_(True)
        y = fn(x_in)
        (grad,) = torch.autograd.grad(y, x_in, torch.ones_like(y), create_graph=track)
    return grad


@dataclass(frozen=True)
class Numerical(CorrelationActivation):
    r"""Any elementwise torch function, its duals by Gauss–Hermite quadrature.

    .. math::
        \mathbb E[\phi(u)\phi(v)] \approx \sum_{k,l} w_k w_l\,
            \phi\big(\sqrt{\Sigma_{xx}}\,z_k\big)\,
            \phi\big(\sqrt{\Sigma_{yy}}\,(c z_k + \sqrt{1-c^2}\,z_l)\big)

    on the ``degree``-point probabilists' Gauss–Hermite rule :math:`(z_k, w_k)` (weights
    summing to 1), :math:`c` the correlation; :math:`\phi'` comes from autograd and goes
    through the same rule, averaged over both orders of :math:`(u, v)`. The rule is exact for polynomials of degree :math:`2\,\text{degree}-1`
    in each variable, so smooth activations converge fast; kinks (ReLU-like) converge
    algebraically. Measured accuracies are in ``docs/kernels.md``.

    ``fn`` must be elementwise and picklable (a torch function such as ``torch.tanh`` or a
    module-level function; not a lambda) for the kernel to pickle. Cost: ``2 * degree**2``
    evaluations of ``fn`` on an n x m tensor per layer and dual (both orders of (u, v)).
    """

    fn: Callable[[Tensor], Tensor] = torch.tanh
    degree: int = 32

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValueError(f"fn must be a callable elementwise function, got {self.fn!r}")
        if isinstance(self.degree, bool) or not isinstance(self.degree, int) or not 2 <= self.degree <= 256:
            # numpy's Hermite rule overflows to NaN weights from degree ~370
            raise ValueError(f"degree must be an integer in [2, 256], got {self.degree!r}")

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        return f"Numerical(fn={name}, degree={self.degree})"

    def _rule(self, like: Tensor) -> tuple[list[float], list[float]]:
        nodes, weights = np.polynomial.hermite_e.hermegauss(self.degree)
        weights = weights / weights.sum()
        return nodes.tolist(), weights.tolist()

    def _quadrature(self, corr, std1, std2, transform) -> Tensor:
        # u and v play different roles in the product rule, so its error is not symmetric in
        # (std1, std2); averaging both orders makes k(X, X) exactly symmetric and every
        # cross-covariance block agree with the joint matrix.
        forward = self._ordered_quadrature(corr, std1, std2, transform)
        return 0.5 * (forward + self._ordered_quadrature(corr, std2, std1, transform))

    def _ordered_quadrature(self, c, sd1, sd2, transform) -> Tensor:
        nodes, weights = self._rule(c)
        # The sum over the symmetric nodes z_l is even in s, hence smooth in c at |c| = 1;
        # the masked root keeps autograd from forming inf * 0 there.
        s = _masked_sqrt(1.0 - c * c)
        total = torch.zeros_like(c)
        for zk, wk in zip(nodes, weights):
            left = transform(sd1 * zk)
            inner = torch.zeros_like(c)
            for zl, wl in zip(nodes, weights):
                inner = inner + wl * transform(sd2 * (c * zk + s * zl))
            total = total + wk * left * inner
        return total

    def _derivative(self, x: Tensor) -> Tensor:
        return _elementwise_derivative(self.fn, x)

    def correlation_duals(self, corr, std1, std2, derivative=True):
        q = self._quadrature(corr, std1, std2, self.fn)
        return q, (self._quadrature(corr, std1, std2, self._derivative) if derivative else None)

    def _variance(self, var, transform) -> Tensor:
        nodes, weights = self._rule(var)
        sd = _masked_sqrt(var)
        total = torch.zeros_like(var)
        for z, w in zip(nodes, weights):
            total = total + w * transform(sd * z) ** 2
        return total

    def variance(self, var):
        return self._variance(var, self.fn)

    def derivative_variance(self, var):
        return self._variance(var, self._derivative)


ACTIVATIONS: dict[str, Callable[[], Activation]] = {
    "relu": ReLU,
    "erf": Erf,
    "abs": Abs,
    "step": Step,
    "identity": Identity,
    "gelu": GELU,
    "sin": Sin,
    "cos": Cos,
    "leaky_relu": LeakyReLU,
}
"""Activations known by name; parameterized ones are also available as objects."""


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
            "(or pass an Activation object such as ArcCos(order=2), ABReLU(a, b), Numerical(fn))"
        )
    raise ValueError(
        f"activation must be a name or an gp_ntk.activations.Activation, got {type(activation).__name__}"
    )
