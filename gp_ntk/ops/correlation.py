r"""The correlation of two Gaussian pre-activations, snapped at :math:`\pm 1` and defined at zero variances."""

from __future__ import annotations

import torch
from torch import Tensor

from .products import grad_free, mul_temporary, outer
from .roots import masked_rsqrt, masked_sqrt

__all__ = [
    "SNAP_ULPS",
    "clamp_unit",
    "correlation",
    "gram_determinant",
    "scaled_correlation",
    "snap_factor",
    "snapped_rsqrt",
    "unit_diagonal",
]


# Each side's reciprocal standard deviation is scaled by 1 + 2 eps, the correlation by about
# 1 + 4 eps: v * rsqrt(v)**2 is within 2 eps of 1 (measured over 1e6 values in float32 and
# float64), so equal points come out at exactly 1, while a band of 4 eps moves deep float32
# kernels (depth 50) by 3e-4 relative, well inside their rounding at that depth.
SNAP_ULPS = 2.0


def snap_factor(dtype: torch.dtype) -> float:
    r""":math:`1 + 2\epsilon`, the factor of :func:`snapped_rsqrt` in ``dtype``."""
    return 1.0 + SNAP_ULPS * torch.finfo(dtype).eps


def snapped_rsqrt(var: Tensor) -> Tensor:
    r""":math:`(1 + 2\epsilon)/\sqrt{v}` (0 at :math:`v = 0`): a side's factor of :func:`scaled_correlation`.

    The factor's square :math:`1 + 4\epsilon` snaps :math:`|c|` within rounding of 1 to exactly
    1 in the clamp of :func:`scaled_correlation`: such a :math:`c` cannot be told from
    :math:`\pm 1`, and an ulp below 1 would become an angle of :math:`\sqrt{2\,\mathrm{ulp}}` at
    the ``arccos``. Equal points cross-evaluated (:math:`v\,\mathrm{rsqrt}(v)^2 \ne 1`) thus get
    the same value as on the diagonal; elsewhere it moves :math:`c` by less than its rounding.
    (Both sides take the square root of the factor so that the product stays symmetric.)
    """
    return masked_rsqrt(var) * snap_factor(var.dtype)


def scaled_correlation(
    cov: Tensor,
    rstd1: Tensor,
    rstd2: Tensor,
    var1: Tensor,
    var2: Tensor,
    zeros: bool = True,
    symmetric: bool = False,
) -> Tensor:
    r"""The correlation from the sides' factors :func:`snapped_rsqrt`: the one place where a
    correlation is formed, clamped to [-1, 1] and given its values at zero variances.

    Args:
        cov: ``(..., n, m)`` covariances, a temporary that may be overwritten where autograd allows.
        rstd1, rstd2: ``snapped_rsqrt(var1)``, ``snapped_rsqrt(var2)``, shaped like ``var1``, ``var2``.
        var1, var2: the variances (``(..., n, 1)``, ``(..., 1, m)``), read only where both are 0.
        zeros: whether both sides may hold a zero variance (a static fact that spares the test).
        symmetric: ``cov`` is :math:`k(X, X)`: its diagonal correlations are set to exactly 1.

    Two zero-variance inputs (zero norm, no bias) are one point, with correlation 1; a zero and
    a non-zero input get 0 (the average over directions), since the reciprocal factor is 0.
    """
    # One multiplication by the reciprocal standard deviations of both sides rather than a
    # square root of the n x m product: the transcendental n x m work of a layer is its arccos.
    c = mul_temporary(outer(rstd1, rstd2), cov)
    if zeros:
        c = torch.where((var1 == 0) & (var2 == 0), torch.ones_like(c), c)
    # Rounding can push |c| a few ulps past 1 near (anti-)parallel inputs; the true derivative of
    # c there is 0, which is also what clamp passes on for values outside the range.
    c = clamp_unit(c)
    if symmetric:
        c = unit_diagonal(c)
    return c


def correlation(
    var1: Tensor, cov: Tensor, var2: Tensor, symmetric: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The correlation :math:`c = \Sigma_{xy}/\sqrt{\Sigma_{xx}\Sigma_{yy}}` clamped to [-1, 1], and the
    standard deviations :math:`\sqrt{\Sigma_{xx}}`, :math:`\sqrt{\Sigma_{yy}}` (shaped like ``var1``, ``var2``).

    Correlations within a few ulps of :math:`\pm 1` (rounding, which ``arccos`` would turn
    into an angle of :math:`\sqrt{2\,\mathrm{ulp}}`) are taken as exactly :math:`\pm 1`.
    ``symmetric`` says that ``cov`` is a matrix :math:`k(X, X)` whose diagonal is ``var1`` and
    ``var2``: its diagonal correlations are then set to exactly 1 whatever the rounding.

    A zero variance comes from a zero-norm input without bias, where the angle is undefined.
    Two such inputs are the same point, so their correlation is 1; between a zero and a
    non-zero input it is set to 0 (the average over directions). Gradients through the zero
    branches are zero, so nothing turns NaN; an overflowed (inf/NaN) variance propagates to
    the output, where the kernels report it, instead of passing for a zero-norm input.

    >>> import torch
    >>> var = torch.tensor([[2.0], [0.0]])
    >>> c, std1, std2 = correlation(var, torch.tensor([[2.0, 0.0], [0.0, 0.0]]), var.mT, symmetric=True)
    >>> c
    tensor([[1., 0.],
            [0., 1.]])
    """
    zeros = _has_zero(var1) and _has_zero(var2)
    c = scaled_correlation(cov, snapped_rsqrt(var1), snapped_rsqrt(var2), var1, var2, zeros, symmetric)
    return c, masked_sqrt(var1), masked_sqrt(var2)


def clamp_unit(c: Tensor) -> Tensor:
    """``c`` clamped to [-1, 1], in place on a temporary where autograd allows."""
    if grad_free(c) and not torch.compiler.is_compiling():
        return c.clamp_(-1.0, 1.0)
    return torch.clamp(c, -1.0, 1.0)


def unit_diagonal(c: Tensor) -> Tensor:
    """``c`` with its diagonal set to exactly 1, in place on a temporary where autograd allows."""
    if grad_free(c) and not torch.compiler.is_compiling():
        c.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        return c
    eye = torch.eye(c.shape[-1], dtype=torch.bool, device=c.device)
    return torch.where(eye, torch.ones_like(c), c)


def _has_zero(var: Tensor) -> bool:
    # a compiled graph takes the branch-free masked path rather than a data-dependent branch
    return torch.compiler.is_compiling() or bool((var == 0).any())


def gram_determinant(var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
    r""":math:`\Sigma_{xx}\Sigma_{yy} - \Sigma_{xy}^2 \ge 0`, factored so it neither overflows nor goes negative."""
    root = masked_sqrt(var1) * masked_sqrt(var2)
    return torch.clamp((root - cov) * (root + cov), min=0.0)
