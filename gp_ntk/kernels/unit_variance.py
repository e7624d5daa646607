r"""A kernel rescaled to unit prior variance: the correlation of its Gaussian process."""

from __future__ import annotations

import math
from typing import Any

import torch
from gpytorch.kernels import Kernel
from torch import Tensor

from ._contract import same_points

__all__ = ["UnitVarianceKernel", "correlation_from_covariance", "variance_scale"]


def variance_scale(variance1: Tensor, variance2: Tensor) -> Tensor | None:
    """A power of two that brings the largest variance into [1/2, 1) where the product of two
    variances could overflow, else ``None`` (the common case).

    Multiplying by it is exact, so the square root of a product of scaled variances keeps every
    exact property of the unscaled one: a deep kernel of a homogeneous activation of degree 2
    reaches :math:`10^{21}` in float32 (``ArcCos(2)``, depth 3, first-layer weight variances of
    500), whose square overflows.
    """
    if variance1.numel() == 0 or variance2.numel() == 0:
        return None
    with torch.no_grad():
        largest = torch.maximum(variance1.detach().max(), variance2.detach().max())
        if not float(largest) > math.sqrt(torch.finfo(largest.dtype).max) / 4:
            return None
        _, exponent = torch.frexp(largest)
        return torch.ldexp(torch.ones_like(largest), -exponent)


def correlation_from_covariance(
    covariance: Tensor, variance1: Tensor, variance2: Tensor, diag: bool = False
) -> Tensor:
    r""":math:`k(x_i, y_j) / \sqrt{k(x_i, x_i)\,k(y_j, y_j)}` from a covariance and its rows' and columns' variances.

    ``diag=True``: ``covariance`` holds :math:`k(x_i, y_i)` and the variances are paired
    elementwise. The square root is of the product, so that :math:`v_i v_j = v_j v_i` and
    :math:`\sqrt{v_i v_i} = v_i` hold exactly in IEEE arithmetic: a symmetric covariance stays
    exactly symmetric with an exactly unit diagonal. Zero variances give zero rows. Variances
    whose product could overflow are first scaled by a power of two (:func:`variance_scale`).
    """
    scale = variance_scale(variance1, variance2)
    if scale is not None:
        covariance, variance1, variance2 = covariance * scale, variance1 * scale, variance2 * scale
    product = variance1 * variance2 if diag else variance1.unsqueeze(-1) * variance2.unsqueeze(-2)
    return covariance / product.clamp_min(torch.finfo(covariance.dtype).tiny).sqrt()


class UnitVarianceKernel(Kernel):
    r"""A kernel divided by its prior standard deviations: unit prior variance everywhere.

    .. math::
        \tilde k(x, y) = \frac{k(x, y)}{\sqrt{k(x, x)\,k(y, y)}}

    is the correlation of the base kernel's GP: the same functions, rescaled pointwise to unit
    variance (:math:`D K D` with :math:`D` diagonal and positive, so still positive
    semi-definite). A dot-product kernel's prior variance grows with :math:`\lVert x\rVert`
    (for ReLU, :math:`k(x, x) = w\lVert x\rVert^2/d + ` bias terms), so on a centred box it is
    largest at the corners; an acquisition function that rewards variance then proposes
    corners, and in high dimension almost only corners (``python benchmarks/bo.py --corners
    PROBLEM`` counts the proposals on the boundary of the box). Dividing
    the variance out leaves only the angular structure.

    For ``k(X, X)`` (also two identical views of one tensor, as GPyTorch's predictions pass) the
    variances are read off the matrix's own diagonal, so the diagonal is
    exactly 1 and the matrix exactly symmetric when the base kernel's is (gp_ntk's are). For
    ``k(X1, X2)`` a gp_ntk base kernel supplies the matrix and both variances from one pass
    (:meth:`~gp_ntk.kernels.base.VarianceKernel.matrix_and_variances`); any other kernel is called
    three times. A small block of a ReLU-family gp_ntk kernel (``gp_ntk.bo``'s default) is
    evaluated whole, normalisation included, as one autograd node with a hand-written backward
    pass (:meth:`~gp_ntk.kernels.base.VarianceKernel.unit_variance_matrix`): the same values, at
    BO sizes in fewer operations. The matrix is evaluated densely (BO-sized data). The base kernel must have a positive diagonal, which
    any gp_ntk kernel with ``bias_variance > 0`` has; exact zeros are kept as zero rows.

    Args:
        base_kernel: any kernel; its ``batch_shape`` is taken over.
    """

    has_lengthscale = False

    def __init__(self, base_kernel: Kernel, **kwargs: Any) -> None:
        if not isinstance(base_kernel, Kernel):
            raise ValueError(f"base_kernel must be a gpytorch Kernel, got {type(base_kernel).__name__}")
        kwargs.setdefault("batch_shape", base_kernel.batch_shape)
        super().__init__(**kwargs)
        self.base_kernel = base_kernel

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError("UnitVarianceKernel does not support last_dim_is_batch")
        if same_points(x1, x2):
            # two slices of one tensor (GPyTorch's test block): the symmetric path
            x2 = x1
        if diag:
            variance1 = self.base_kernel(x1, diag=True)
            if x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2)):
                # a point's correlation with itself: exactly 1, as on the diagonal of k(X, X)
                return torch.where(variance1 > 0, torch.ones_like(variance1), torch.zeros_like(variance1))
            covariance = self.base_kernel(x1, x2, diag=True)
            return correlation_from_covariance(
                covariance, variance1, self.base_kernel(x2, diag=True), diag=True
            )
        fused = getattr(self.base_kernel, "unit_variance_matrix", None)
        matrix = None if fused is None else fused(x1, x2)
        if matrix is not None:
            # small blocks of gp_ntk's ReLU-family kernels: the whole matrix as one autograd node
            return matrix
        one_pass = getattr(self.base_kernel, "matrix_and_variances", None)
        parts = None if one_pass is None or x1 is x2 else one_pass(x1, x2)
        if parts is not None:
            # gp_ntk's kernels: the variances come from the statistics the matrix is computed
            # from, one kernel pass instead of three
            covariance, variance1, variance2 = parts
        else:
            covariance = self.base_kernel(x1, x2).to_dense()
            if x1 is x2:
                variance1 = variance2 = covariance.diagonal(dim1=-2, dim2=-1)
            else:
                variance1 = self.base_kernel(x1, diag=True)
                variance2 = self.base_kernel(x2, diag=True)
        return correlation_from_covariance(covariance, variance1, variance2)
