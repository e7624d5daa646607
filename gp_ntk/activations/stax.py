r"""The activations of neural-tangents' ``stax`` with closed-form duals, in its parameterisation.

``Sign``, ``Erf(a, b, c)``, ``Sin(a, b, c)``, ``Cos``, ``Rbf(gamma)``, ``Exp(a, b)``, ``Gaussian(a, b)``,
``Polynomial(coef)`` and ``Monomial(degree)`` take neural-tangents' argument names, so that a kernel
built there ports by name (see the mapping table in ``docs/kernels.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..ops import arccos_j, double_factorial, gram_determinant, horner, mul_temporary
from .base import (
    Activation,
    CorrelationActivation,
    _asin,
    _eager,
    _finite_real,
    _integer,
    _set,
    _times_outer,
    register_activation,
)


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
        q = mul_temporary(arccos_j(corr, 0), 2.0 / math.pi) - 1.0
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


@dataclass(frozen=True)
class _ExponentialFamily(Activation):
    """The parameters :math:`a` (amplitude) and :math:`b` of ``Exp`` and ``Gaussian``, as
    neural-tangents names them; each subclass keeps its own default :math:`b`."""

    a: float = 1.0
    b: float = 1.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _set(self, a=_finite_real(name, "a", self.a), b=_finite_real(name, "b", self.b))

    def stax_layer(self):
        return type(self).__name__, {"a": self.a, "b": self.b}


@register_activation("exp")
@dataclass(frozen=True)
class Exp(_ExponentialFamily):
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

    @classmethod
    def examples(cls):
        return (cls(), cls(0.5, -0.6), cls(1.5, 0.4))

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
class Gaussian(_ExponentialFamily):
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

    b: float = -1.0

    @classmethod
    def examples(cls):
        return (cls(), cls(0.8, -0.3), cls(1.2, 0.05))

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


def _polynomial_dual(terms: tuple[tuple[float, ...], ...], var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
    # sum_m cov^m (sqrt(m!) g_m(var1)) (sqrt(m!) g_m(var2)) by Horner's rule in cov
    result: Tensor | float = 0.0
    for term in reversed(terms):
        result = result * cov + horner(term, var1) * horner(term, var2)
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
        value = horner(self.coef, x)
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
