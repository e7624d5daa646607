r"""Network kernels between values and gradients, for GPs with derivative observations.

Every kernel of gp_ntk is a function of the first layer's three covariances
:math:`a = \Sigma^{(1)}(x, x)`, :math:`c = \Sigma^{(1)}(x, y)`, :math:`b = \Sigma^{(1)}(y, y)`,

.. math::
    \Sigma^{(1)}(x, y) = \sigma_b^2 + x^\top W y, \qquad W = \mathrm{diag}(\sigma_{w,i}^2)\ [/d],

pushed through the layers' maps :math:`(A, C, B) \mapsto (A', C', B')`,
:math:`C' = \sigma_w^2\,q(A, C, B) + \sigma_b^2` with the activation's dual
:math:`q = \mathbb E[\phi(u)\phi(v)]`. Writing the kernel as :math:`F(a, c, b)`, the chain rule
through the first layer gives, with :math:`u = Wx` and :math:`v = Wy`,

.. math::
    \partial_x k &= 2F_a\,u + F_c\,v, \qquad \partial_y k = 2F_b\,v + F_c\,u,\\
    \partial_x\partial_y^\top k &= F_c\,W + 4F_{ab}\,u v^\top + 2F_{ac}\,u u^\top
        + 2F_{bc}\,v v^\top + F_{cc}\,v u^\top,

so per pair only seven scalar sensitivities :math:`F_a, F_c, F_b, F_{ab}, F_{ac}, F_{bc}, F_{cc}`
are needed (:math:`F_{aa}` and :math:`F_{bb}` never appear). They are propagated layer by
layer (``_compose``) from the partial derivatives of the layer map; :math:`A` depends on
:math:`a` alone, so its slope :math:`\mathrm dA'/\mathrm dA = \sigma_w^2 V'(A)`,
:math:`V(s) = q(s, s, s)`, is all it contributes. The NTK,
:math:`\Theta' = C' + \sigma_w^2\,\dot q\,\Theta`, also needs the partials of
:math:`\dot q = \mathbb E[\phi'(u)\phi'(v)] = \partial q/\partial C` (Price's theorem).

The layer partials come in closed form for the rectified activations (``ABReLU`` family,
``ArcCos(n)``): with :math:`s = \sqrt{AB}`, :math:`\rho = C/s` and :math:`q = s^n j(\rho)`
(:math:`j = J_n/2\pi` from Cho & Saul's angular functions, :math:`j' = n^2 J_{n-1}/2\pi`),

.. math::
    q_C = s^{n-1}j', \quad q_A = \frac{s^n(nj - \rho j')}{2A}, \quad q_{CC} = s^{n-2}j'',\quad
    q_{AC} = \frac{s^{n-1}((n-1)j' - \rho j'')}{2A},\quad
    q_{AB} = \frac{s^{n-2}}{4}\big(n^2 j - (2n-1)\rho j' + \rho^2 j''\big),

closed forms for erf, sin, cos and identity (``_erf_partials``, ...), and for GELU by
autograd of its closed-form duals as an elementwise map of (A, C, B): only the layer map is differentiated, never the kernel.

Smoothness. A GP with derivative observations needs :math:`\partial_x\partial_y k` to be
continuous, duplicates included. The ReLU-family NNGP is (:math:`J_1(\theta) = \pi\cos\theta
+ \theta^3/3 + O(\theta^5)`, a cubic cusp); its :math:`j'' \propto 1/\sin\theta` diverges at
:math:`x = y` but multiplies :math:`\nabla\rho\,\nabla\rho^\top = O(\sin^2\theta)`, and it is
taken as 0 there (within 64 ulps of :math:`|\rho| = 1`), which is the limit. The ReLU-family
NTK contains :math:`J_0 = \pi - \theta`, a Laplace-like cusp, and is refused, as are the
step function and activations without closed forms here (``Numerical``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..activations import (
    GELU,
    ABReLU,
    Activation,
    ArcCos,
    Cos,
    Erf,
    Exp,
    Gaussian,
    Identity,
    Monomial,
    Polynomial,
    Rbf,
    Sin,
)
from ..ops import arccos_j, arccos_j_pair, correlation, symmetrize
from ..recursion import linear_covariances
from .arc_cosine import ArcCosineKernel
from .base import VarianceKernel, check_inputs
from .erf import ErfKernel
from .nngp import NNGPKernel
from .ntk import NTKKernel

__all__ = [
    "ArcCosineKernelGrad",
    "ErfKernelGrad",
    "NNGPKernelGrad",
    "NTKKernelGrad",
    "gradient_kernel_by_autograd",
    "supports_gradients",
]

_TWO_PI = 2.0 * math.pi
# |rho| within this many ulps of 1 is a duplicate (or parallel) pair: its singular j'' term
# multiplies a vanishing factor and is dropped
_SNAP_ULPS = 64.0

# the seven sensitivities and the value, in this order
_VALUE, _A, _C, _B, _AB, _AC, _BC, _CC = range(8)
Partials = tuple[Tensor, ...]


# --------------------------------------------------------------------------- layer partials


def _arcsine_slope(rho: Tensor) -> Tensor:
    r""":math:`\mathrm dJ_0/\mathrm d\rho = 1/\sqrt{1-\rho^2}`, 0 at :math:`|\rho| = 1` (see module docstring)."""
    gap = (1.0 - rho) * (1.0 + rho)
    regular = gap > _SNAP_ULPS * torch.finfo(rho.dtype).eps
    return torch.where(regular, torch.rsqrt(torch.where(regular, gap, torch.ones_like(gap))), 0.0)


def _angular_derivative(order: int, k: int, rho: Tensor) -> Tensor:
    r""":math:`\mathrm d^k J_n/\mathrm d\rho^k` from :math:`J_n' = n^2 J_{n-1}` and :math:`J_0' = 1/\sqrt{1-\rho^2}`."""
    coefficient, m = 1.0, order
    for step in range(k):
        if m == 0:
            if step != k - 1:
                raise ValueError(f"J_{order} has no closed-form derivative of order {k} here")
            return coefficient * _arcsine_slope(rho)
        coefficient *= m * m
        m -= 1
    return coefficient * arccos_j(rho, m)


def _angular_derivatives(order: int, count: int, rho: Tensor) -> list[Tensor]:
    """:math:`J_n^{(k)}(\rho)` for ``k < count``; the first two share one ``arccos``."""
    if order >= 1 and count >= 2:
        high, low = arccos_j_pair(rho, order)
        return [high, (order * order) * low] + [_angular_derivative(order, k, rho) for k in range(2, count)]
    return [_angular_derivative(order, k, rho) for k in range(count)]


def _rectified_form(activation: Activation) -> tuple[int, Callable[[int, Tensor], list[Tensor]]] | None:
    """``(n, j)`` with ``q = s**n j(rho)`` and ``j(count, rho)`` its first ``count`` derivatives."""
    if isinstance(activation, ABReLU):
        square, cross = activation.a**2 + activation.b**2, 2.0 * activation.a * activation.b

        def j(count: int, rho: Tensor) -> list[Tensor]:
            # J_1 and its derivatives at -rho from those at rho: J_1(-rho) = J_1(rho) - pi rho,
            # J_0(-rho) = pi - J_0(rho), and J_0' is even
            if count > 3:
                raise ValueError("the ABReLU family has no third derivative of its dual here")
            at = _angular_derivatives(1, count, rho)
            if not cross:
                return [square / _TWO_PI * t for t in at]
            mirrored = [at[0] - math.pi * rho, math.pi - at[1], at[2] if count > 2 else None][:count]
            return [
                (square * t - cross * (-1.0) ** k * m) / _TWO_PI for k, (t, m) in enumerate(zip(at, mirrored))
            ]

        return 1, j
    if isinstance(activation, ArcCos):
        order = activation.order
        return order, lambda count, rho: [t / _TWO_PI for t in _angular_derivatives(order, count, rho)]
    return None


def _homogeneous_partials(
    degree: int, j0: Tensor, j1: Tensor, j2: Tensor, rho: Tensor, s: Tensor, var1: Tensor, var2: Tensor
) -> Partials:
    """Value and partials of ``s**degree j(rho)`` in ``(A, C, B)`` (module docstring)."""
    n = degree
    s_n, s_n1, s_n2 = s**n, s ** (n - 1), s ** (n - 2)
    first = n * j0 - rho * j1
    mixed = (n - 1) * j1 - rho * j2
    return (
        s_n * j0,
        s_n * first / (2.0 * var1),
        s_n1 * j1,
        s_n * first / (2.0 * var2),
        s_n2 * (n * n * j0 - (2 * n - 1) * rho * j1 + rho * rho * j2) / 4.0,
        s_n1 * mixed / (2.0 * var1),
        s_n1 * mixed / (2.0 * var2),
        s_n2 * j2,
    )


def _rectified_partials(form, var1: Tensor, cov: Tensor, var2: Tensor, compute_ntk: bool):
    degree, j = form
    rho, std1, std2 = correlation(var1, cov, var2)
    s = std1 * std2
    snap = 1.0 - _SNAP_ULPS * torch.finfo(rho.dtype).eps
    rho = torch.where(rho.abs() >= snap, torch.sign(rho), rho)
    derivatives = j(4 if compute_ntk else 3, rho)
    q = _homogeneous_partials(degree, *derivatives[:3], rho, s, var1, var2)
    if not compute_ntk:
        return q, None
    return q, _homogeneous_partials(degree - 1, *derivatives[1:], rho, s, var1, var2)


def _erf_duals(a: Tensor, c: Tensor, b: Tensor) -> Tensor:
    scale = (1.0 + 2.0 * a) * (1.0 + 2.0 * b)
    q = (2.0 / math.pi) * torch.asin(2.0 * c * torch.rsqrt(scale))
    return torch.stack([q, (4.0 / math.pi) * torch.rsqrt(scale - 4.0 * c * c)])


def _gelu_duals(a: Tensor, c: Tensor, b: Tensor) -> Tensor:
    # the GELU activation's closed forms with Delta = (1 + a)(1 + b) - c^2 > 0 written directly,
    # so that they are smooth to every order (no clamps)
    a1, b1 = 1.0 + a, 1.0 + b
    k = torch.sqrt(a1 * b1)
    root_delta = torch.sqrt(a1 * b1 - c * c)
    asin = torch.asin(c / k)
    inv_sum = 1.0 / a1 + 1.0 / b1
    k_minus_root = c * c / (k + root_delta)
    q = (
        a * b / (_TWO_PI * k)
        + 0.25 * c
        + (c * asin - k_minus_root * (1.0 - inv_sum) + k_minus_root / (k * root_delta)) / _TWO_PI
    )
    ratio = c / root_delta
    q_dot = 0.25 + (asin + ratio * inv_sum + ratio / (root_delta * root_delta)) / _TWO_PI
    return torch.stack([q, q_dot])


def _sin_duals(a: Tensor, c: Tensor, b: Tensor) -> Tensor:
    damping = torch.exp(-0.5 * (a + b))
    return torch.stack([damping * torch.sinh(c), damping * torch.cosh(c)])


def _cos_duals(a: Tensor, c: Tensor, b: Tensor) -> Tensor:
    damping = torch.exp(-0.5 * (a + b))
    return torch.stack([damping * torch.cosh(c), damping * torch.sinh(c)])


def _identity_duals(a: Tensor, c: Tensor, b: Tensor) -> Tensor:
    return torch.stack([c, 1.0 + 0.0 * c])


_SMOOTH_DUALS: dict[type, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    Erf: _erf_duals,
    GELU: _gelu_duals,
    Sin: _sin_duals,
    Cos: _cos_duals,
    Identity: _identity_duals,
}


def _erf_partials(var1: Tensor, cov: Tensor, var2: Tensor, compute_ntk: bool):
    r"""Closed forms for erf: with :math:`P = 1 + 2A`, :math:`Q = 1 + 2B`, :math:`D = PQ - 4C^2` and
    :math:`r = D^{-1/2}`: :math:`q_C = \tfrac4\pi r`, :math:`q_A = -\tfrac4\pi Cr/P`,
    :math:`q_{CC} = \tfrac{16}\pi Cr^3`, :math:`q_{AC} = -\tfrac4\pi Qr^3`, :math:`q_{AB} = \tfrac4\pi Cr^3`."""
    p, q = 1.0 + 2.0 * var1, 1.0 + 2.0 * var2
    det = p * q - 4.0 * cov * cov
    r = torch.rsqrt(det)
    r3 = r * r * r
    k = 4.0 / math.pi
    value = (2.0 / math.pi) * torch.asin(2.0 * cov * torch.rsqrt(p * q))
    dual = (
        value,
        -k * cov * r / p,
        k * r,
        -k * cov * r / q,
        k * cov * r3,
        -k * q * r3,
        -k * p * r3,
        4.0 * k * cov * r3,
    )
    if not compute_ntk:
        return dual, None
    r5 = r3 * r * r
    derivative = (
        k * r,
        -k * q * r3,
        4.0 * k * cov * r3,
        -k * p * r3,
        -k * r5 * (2.0 * det - 3.0 * p * q),
        -12.0 * k * q * cov * r5,
        -12.0 * k * p * cov * r5,
        4.0 * k * r5 * (det + 12.0 * cov * cov),
    )
    return dual, derivative


def _exponential_pair_partials(even: Tensor, odd: Tensor) -> Partials:
    # P = e^{-(A+B)/2} (cosh or sinh) C with partner S: dP/dC = S, dS/dC = P, d/dA = d/dB = -1/2
    return (even, -0.5 * even, odd, -0.5 * even, 0.25 * even, -0.5 * odd, -0.5 * odd, even)


def _trigonometric_partials(sine: bool, var1: Tensor, cov: Tensor, var2: Tensor, compute_ntk: bool):
    total = var1 + var2
    minus = 0.5 * torch.exp(-0.5 * total + cov)
    plus = 0.5 * torch.exp(-0.5 * total - cov)
    sinh, cosh = minus - plus, minus + plus  # times e^{-(A+B)/2}
    value, derivative = (sinh, cosh) if sine else (cosh, sinh)
    dual = _exponential_pair_partials(value, derivative)
    return dual, (_exponential_pair_partials(derivative, value) if compute_ntk else None)


def _identity_partials(var1: Tensor, cov: Tensor, var2: Tensor, compute_ntk: bool):
    zeros = torch.zeros_like(cov)
    dual = (cov, zeros, torch.ones_like(cov), zeros, zeros, zeros, zeros, zeros)
    return dual, ((torch.ones_like(cov),) + (zeros,) * 7 if compute_ntk else None)


_CLOSED_FORM_PARTIALS: dict[type, Callable] = {
    Erf: _erf_partials,
    Sin: lambda *args: _trigonometric_partials(True, *args),
    Cos: lambda *args: _trigonometric_partials(False, *args),
    Identity: _identity_partials,
}


# activations that are smooth (infinitely differentiable) for every value of their arguments
_SMOOTH_ACTIVATIONS = (Erf, Sin, Cos, Rbf, GELU, Identity, Exp, Gaussian, Monomial, Polynomial)


def _is_default(activation: Activation, cls: type) -> bool:
    """``activation`` is ``cls`` itself with its default arguments, as the closed forms here assume."""
    if type(activation) is not cls:
        return False
    try:
        return activation == cls()
    except (TypeError, ValueError):
        return False


def _smooth_duals(activation: Activation) -> Callable[[Tensor, Tensor, Tensor], Tensor] | None:
    for cls, duals in _SMOOTH_DUALS.items():
        if _is_default(activation, cls):
            return duals
    if isinstance(activation, _SMOOTH_ACTIVATIONS):
        # any other smooth activation (parameterised Erf(a, b, c), Sin, Exp, ...): the partials
        # come from its own closed-form duals, differentiated as an elementwise layer map
        return lambda var1, cov, var2: torch.stack(activation.duals(var1, cov, var2))
    return None


def _smooth_partials(duals, var1: Tensor, cov: Tensor, var2: Tensor, compute_ntk: bool):
    """Partials of ``(q, q_dot)`` by autograd of the elementwise layer map.

    The map acts on each pair alone, so the gradient of a sum over pairs is every pair's own
    partial derivative; differentiating those again gives the second partials. The graph is
    kept (``create_graph``), so the partials stay differentiable in the hyperparameters.
    """
    shape = torch.broadcast_shapes(var1.shape, cov.shape, var2.shape)
    outer_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (var1, cov, var2))
    with torch.enable_grad():
        if outer_graph:
            inputs = tuple(t.expand(shape).clone() for t in (var1, cov, var2))
        else:
            inputs = tuple(t.detach().expand(shape).clone().requires_grad_(True) for t in (var1, cov, var2))
        values = duals(*inputs)
        results = [_elementwise_partials(values[i], inputs) for i in range(2 if compute_ntk else 1)]
    if not outer_graph:
        results = [tuple(t.detach() for t in r) for r in results]
    return results[0], (results[1] if compute_ntk else None)


def _grad(output: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    if not output.requires_grad:
        return tuple(torch.zeros_like(t) for t in inputs)
    grads = torch.autograd.grad(output.sum(), inputs, create_graph=True, allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs))


def _elementwise_partials(value: Tensor, inputs: tuple[Tensor, Tensor, Tensor]) -> Partials:
    a, c, b = inputs
    d_a, d_c, d_b = _grad(value, inputs)
    (d_ab,) = _grad(d_a, (b,))
    d_ac, d_cc, d_bc = _grad(d_c, inputs)
    return value, d_a, d_c, d_b, d_ab, d_ac, d_bc, d_cc


def _layer_partials(activation: Activation, var1: Tensor, cov: Tensor, var2: Tensor, compute_ntk: bool):
    """``(q, q_dot)`` partials of one layer's dual in ``(A, C, B)`` (``q_dot`` only with ``compute_ntk``)."""
    form = _rectified_form(activation)
    if form is not None:
        return _rectified_partials(form, var1, cov, var2, compute_ntk)
    for cls, partials in _CLOSED_FORM_PARTIALS.items():
        if _is_default(activation, cls):
            return partials(var1, cov, var2, compute_ntk)
    return _smooth_partials(_smooth_duals(activation), var1, cov, var2, compute_ntk)


def _variance_slope(activation: Activation, var: Tensor) -> Tensor:
    r""":math:`V'(s)` for :math:`V(s) = q(s, s, s)`: the sum of the three first partials there."""
    q, _ = _layer_partials(activation, var, var, var, False)
    return q[_A] + q[_C] + q[_B]


def supports_gradients(activation: Activation, ntk: bool) -> str | None:
    """``None`` if the gradient kernel exists in closed form here, else the reason it does not."""
    form = _rectified_form(activation)
    if form is not None:
        degree = form[0]
        if degree == 0:
            return (
                f"{activation!r} is a step: its NNGP has a cusp (pi - theta) at x = y, so gradient "
                "observations have infinite variance"
            )
        if ntk and degree == 1:
            return (
                f"the NTK of {activation!r} contains E[phi'phi'] = (pi - theta)/(2 pi) up to constants, a "
                "Laplace-like cusp at x = y: gradient observations are ill-posed there; use NNGPKernelGrad "
                "(continuously twice differentiable for this activation) or a smooth activation "
                "(erf, gelu, sin, cos, identity, ArcCos(order >= 2))"
            )
        return None
    if _smooth_duals(activation) is not None:
        return None
    return (
        f"no closed-form derivatives of the layer map for {activation!r}; supported: relu, leaky_relu, "
        "abs, ABReLU (NNGP only), ArcCos(order >= 1) (NTK: order >= 2), erf, gelu, sin, cos, identity"
    )


# --------------------------------------------------------------------------- chain rule


def _compose(g: Partials, slope1: Tensor, slope2: Tensor, cov: Partials) -> Partials:
    r"""Partials in :math:`(a, c, b)` of :math:`g(A(a), C(a, c, b), B(b))`.

    ``g`` holds ``g``'s partials in ``(A, C, B)``, ``slope1`` = :math:`A'(a)`,
    ``slope2`` = :math:`B'(b)` and ``cov`` the partials of :math:`C` in ``(a, c, b)``.
    """
    _, g_a, g_c, g_b, g_ab, g_ac, g_bc, g_cc = g
    _, c_a, c_c, c_b, c_ab, c_ac, c_bc, c_cc = cov
    return (
        g[_VALUE],
        g_a * slope1 + g_c * c_a,
        g_c * c_c,
        g_b * slope2 + g_c * c_b,
        g_ab * slope1 * slope2 + g_ac * slope1 * c_b + g_bc * c_a * slope2 + g_cc * c_a * c_b + g_c * c_ab,
        g_ac * slope1 * c_c + g_cc * c_a * c_c + g_c * c_ac,
        g_bc * slope2 * c_c + g_cc * c_b * c_c + g_c * c_bc,
        g_cc * c_c * c_c + g_c * c_cc,
    )


def _tangent_step(cov: Partials, p: Partials, theta: Partials, w) -> Partials:
    r"""Partials of :math:`\Theta' = C' + w\,P\,\Theta` (product rule)."""
    P, p_a, p_c, p_b, p_ab, p_ac, p_bc, p_cc = p
    T, t_a, t_c, t_b, t_ab, t_ac, t_bc, t_cc = theta
    return (
        cov[_VALUE] + w * P * T,
        cov[_A] + w * (p_a * T + P * t_a),
        cov[_C] + w * (p_c * T + P * t_c),
        cov[_B] + w * (p_b * T + P * t_b),
        cov[_AB] + w * (p_ab * T + p_a * t_b + p_b * t_a + P * t_ab),
        cov[_AC] + w * (p_ac * T + p_a * t_c + p_c * t_a + P * t_ac),
        cov[_BC] + w * (p_bc * T + p_b * t_c + p_c * t_b + P * t_bc),
        cov[_CC] + w * (p_cc * T + 2.0 * p_c * t_c + P * t_cc),
    )


def recursion_partials(
    activation: Activation,
    var1: Tensor,
    cov: Tensor,
    var2: Tensor,
    weight_variances,
    bias_variances,
    compute_ntk: bool,
) -> Partials:
    r"""The kernel :math:`F(a, c, b)` and its seven sensitivities, through all layers.

    Args:
        var1, cov, var2: first-layer :math:`a` ``(..., n, 1)``, :math:`c` ``(..., n, m)``,
            :math:`b` ``(..., 1, m)``; or three ``(..., n)`` tensors for pairs.
        weight_variances, bias_variances: the layers after each activation, as the value
            kernels' ``_recursion_layers`` give them (a last ``None``: no affine map after the
            last activation).
        compute_ntk: return the NTK's partials instead of the NNGP's.

    Returns:
        ``(F, F_a, F_c, F_b, F_ab, F_ac, F_bc, F_cc)``, broadcast to ``cov``'s shape.
    """
    zeros = torch.zeros_like(cov)
    state = (cov, zeros, torch.ones_like(cov), zeros, zeros, zeros, zeros, zeros)
    theta = state
    slope1, slope2 = torch.ones_like(var1), torch.ones_like(var2)
    for w, b in zip(weight_variances, bias_variances):
        q, q_dot = _layer_partials(activation, var1, state[_VALUE], var2, compute_ntk)
        composed = _compose(q, slope1, slope2, state)
        if w is None:
            # the network ends at this activation: no affine map, and no tangent term of its own
            if compute_ntk:
                no_tangent = (zeros,) * len(composed)
                theta = _tangent_step(no_tangent, _compose(q_dot, slope1, slope2, state), theta, 1.0)
            state = composed
            continue
        value = w * composed[_VALUE] + (0.0 if b is None else b)
        next_state = (value,) + tuple(w * t for t in composed[1:])
        if compute_ntk:
            theta = _tangent_step(next_state, _compose(q_dot, slope1, slope2, state), theta, w)
        slope1 = w * _variance_slope(activation, var1) * slope1
        slope2 = w * _variance_slope(activation, var2) * slope2
        var1 = _affine(activation.variance(var1), w, b)
        var2 = _affine(activation.variance(var2), w, b)
        state = next_state
    return theta if compute_ntk else state


def _affine(q: Tensor, w, b) -> Tensor:
    return w * q if b is None else w * q + b


# --------------------------------------------------------------------------- layout


def _first_layer_vectors(kernel: VarianceKernel, x1: Tensor, x2: Tensor, variances: dict[str, Tensor]):
    """The first layer's ``W x1``, ``W x2``, ``diag(W)`` and bias (as the value kernel reads them)."""
    weight, bias = kernel._first_layer(x1, variances)
    w = weight.expand(*weight.shape[:-1], x1.shape[-1])
    return x1 * w, x2 * w, w, bias


def _full_matrix(kernel, x1: Tensor, x2: Tensor, variances: dict[str, Tensor], compute_ntk: bool) -> Tensor:
    u, v, w, bias = _first_layer_vectors(kernel, x1, x2, variances)
    var1, cov, var2 = linear_covariances(x1, x2, w, bias)
    weights, biases = kernel._recursion_layers(cov, False, variances)
    f, f_a, f_c, f_b, f_ab, f_ac, f_bc, f_cc = recursion_partials(
        kernel.activation, var1, cov, var2, weights, biases, compute_ntk
    )
    n, m, d = x1.shape[-2], x2.shape[-2], x1.shape[-1]
    # (..., n, i, m, j) layout: point n's entry i against point m's entry j
    u_i = u.unsqueeze(-1).unsqueeze(-1)  # (..., n, d, 1, 1)
    u_j = u.unsqueeze(-2).unsqueeze(-2)  # (..., n, 1, 1, d)
    v_i = v.mT.unsqueeze(-3).unsqueeze(-1)  # (..., 1, d, m, 1)
    v_j = v.unsqueeze(-3).unsqueeze(-3)  # (..., 1, 1, m, d)

    def pair(t: Tensor) -> Tensor:
        return t.unsqueeze(-2).unsqueeze(-1)  # (..., n, 1, m, 1)

    batch = f.shape[:-2]
    out = torch.empty(*batch, n, d + 1, m, d + 1, dtype=f.dtype, device=f.device)
    out[..., :, 0, :, 0] = f
    out[..., :, 1:, :, 0] = (2.0 * pair(f_a) * u_i + pair(f_c) * v_i).squeeze(-1)
    out[..., :, 0, :, 1:] = (2.0 * pair(f_b) * v_j + pair(f_c) * u_j).squeeze(-3)
    # the n d x m d block is the bulk of the work: written in place, one temporary
    hessian = out[..., :, 1:, :, 1:]
    hessian.copy_(u_i * (4.0 * pair(f_ab) * v_j + 2.0 * pair(f_ac) * u_j))
    hessian.addcmul_(v_i, 2.0 * pair(f_bc) * v_j + pair(f_cc) * u_j)
    hessian.diagonal(dim1=-3, dim2=-1).add_(f_c.unsqueeze(-1) * w.unsqueeze(-2))
    out = out.reshape(*batch, n * (d + 1), m * (d + 1))
    if x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2)):
        out = symmetrize(out)
    return out


def _diagonal(kernel, x1: Tensor, x2: Tensor, variances: dict[str, Tensor], compute_ntk: bool) -> Tensor:
    u, v, w, bias = _first_layer_vectors(kernel, x1, x2, variances)
    var1, cov, var2 = linear_covariances(x1, x2, w, bias, diag=True)
    weights, biases = kernel._recursion_layers(cov, True, variances)
    f, _, f_c, _, f_ab, f_ac, f_bc, f_cc = recursion_partials(
        kernel.activation, var1, cov, var2, weights, biases, compute_ntk
    )
    e = lambda t: t.unsqueeze(-1)  # noqa: E731
    hessian = e(f_c) * w + 4.0 * e(f_ab) * u * v + 2.0 * e(f_ac) * u * u + 2.0 * e(f_bc) * v * v
    hessian = hessian + e(f_cc) * u * v
    return torch.cat([e(f), hessian], dim=-1).reshape(*f.shape[:-1], -1)


class _GradientKernelMixin:
    r"""``forward`` in GPyTorch's ``RBFKernelGrad`` layout: ``k(x1, x2)`` is ``n(d+1) x m(d+1)``,
    entry ``(i(d+1) + alpha, j(d+1) + beta)`` the covariance of :math:`\partial_\alpha f(x_{1i})`
    and :math:`\partial_\beta f(x_{2j})`, with :math:`\partial_0 f = f`."""

    _gradient_ntk = False

    def _check_gradient_activation(self) -> None:
        reason = supports_gradients(self.activation, self._gradient_ntk)
        if reason is not None:
            raise ValueError(
                f"{type(self).__name__}: activation={self.activation!r} is not allowed: {reason}"
            )

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError(f"{type(self).__name__} does not take last_dim_is_batch=True")
        check_inputs(x1, x2, self.ard_num_dims)
        if not self.has_bias and _rectified_form(self.activation) is not None:
            for name, x in (("x1", x1), ("x2", x2)):
                if bool((x == 0).all(-1).any()):
                    raise ValueError(
                        f"{name} has a zero row: without biases a rectified network kernel is not "
                        "differentiable at x = 0; use a positive bias_variance or remove the row"
                    )
        variances = self._variances()
        if diag:
            if x1.shape[-2] != x2.shape[-2]:
                raise ValueError(
                    f"diag=True needs as many points in x1 as in x2, got {x1.shape[-2]} and {x2.shape[-2]}"
                )
            result = _diagonal(self, x1, x2, variances, self._gradient_ntk)
        else:
            result = _full_matrix(self, x1, x2, variances, self._gradient_ntk)
        return self._checked_output(result)

    def num_outputs_per_input(self, x1: Tensor, x2: Tensor) -> int:
        return x1.size(-1) + 1


class NNGPKernelGrad(_GradientKernelMixin, NNGPKernel):
    r""":class:`~gp_ntk.NNGPKernel` between values and gradients (``RBFKernelGrad`` layout).

    Takes the arguments of :class:`~gp_ntk.NNGPKernel`; ``num_outputs_per_input`` is
    :math:`d + 1`. Activations: relu, leaky_relu, abs, ``ABReLU``, ``ArcCos(n >= 1)``, erf,
    gelu, sin, cos, identity; the ReLU family is twice continuously differentiable (cubic cusp
    at :math:`x = y`), see :mod:`gp_ntk.kernels.grad` and ``docs/gradients.md``.

    Example:
        >>> import torch, gp_ntk
        >>> k = gp_ntk.NNGPKernelGrad(depth=2, activation="erf")
        >>> k(torch.randn(5, 3)).to_dense().shape
        torch.Size([20, 20])
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_gradient_activation()


class NTKKernelGrad(_GradientKernelMixin, NTKKernel):
    r""":class:`~gp_ntk.NTKKernel` between values and gradients (``RBFKernelGrad`` layout).

    Takes the arguments of :class:`~gp_ntk.NTKKernel` (NTK parameterization only). The NTK of
    the ReLU family has a Laplace-like cusp at :math:`x = y` and is refused with a
    ``ValueError``; smooth activations and ``ArcCos(n >= 2)`` are allowed.
    """

    _gradient_ntk = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.parameterization != "ntk":
            raise ValueError("NTKKernelGrad supports parameterization='ntk' only")
        self._check_gradient_activation()


class ErfKernelGrad(_GradientKernelMixin, ErfKernel):
    r""":class:`~gp_ntk.ErfKernel` (Williams' arcsine kernel) between values and gradients."""


class ArcCosineKernelGrad(_GradientKernelMixin, ArcCosineKernel):
    r""":class:`~gp_ntk.ArcCosineKernel` between values and gradients; ``order >= 1``
    (order 0 has a cusp, order 1 is twice continuously differentiable)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._check_gradient_activation()


# --------------------------------------------------------------------------- reference


def gradient_kernel_by_autograd(kernel: VarianceKernel, x1: Tensor, x2: Tensor) -> Tensor:
    r"""The same ``n(d+1) x m(d+1)`` matrix by autograd of a value kernel (a reference, and slow).

    All :math:`nm` pairs are evaluated with ``diag=True`` (each output depends on its own pair
    only, so gradients of the sum are per-pair gradients); the mixed block takes :math:`d`
    further backward passes. Inputs without batch dimensions.
    """
    n, m, d = x1.shape[-2], x2.shape[-2], x1.shape[-1]
    pairs1 = x1.repeat_interleave(m, dim=0).detach().requires_grad_(True)
    pairs2 = x2.repeat(n, 1).detach().requires_grad_(True)
    with torch.enable_grad():
        values = kernel(pairs1, pairs2, diag=True)
        grad1, grad2 = torch.autograd.grad(values.sum(), (pairs1, pairs2), create_graph=True)
        mixed = torch.stack(
            [torch.autograd.grad(grad1[:, i].sum(), pairs2, retain_graph=True)[0] for i in range(d)], dim=1
        )  # (nm, i, j)
    out = torch.empty(n, d + 1, m, d + 1, dtype=x1.dtype, device=x1.device)
    out[:, 0, :, 0] = values.detach().reshape(n, m)
    out[:, 1:, :, 0] = grad1.detach().reshape(n, m, d).transpose(-1, -2)
    out[:, 0, :, 1:] = grad2.detach().reshape(n, m, d)
    out[:, 1:, :, 1:] = mixed.detach().reshape(n, m, d, d).transpose(1, 2)
    return out.reshape(n * (d + 1), m * (d + 1))
