r"""Tensor operations the kernels are built from; nothing here knows about layers or activations.

* :mod:`~gp_ntk.ops.autograd`: which inputs of a custom autograd function a backward pass will
  use;
* :mod:`~gp_ntk.ops.angular`: Cho & Saul's angular functions :math:`J_n` with finite derivatives;
* :mod:`~gp_ntk.ops.correlation`: the one correlation routine (snapped at :math:`\pm 1`, defined at
  zero variances) and the Gram determinant;
* :mod:`~gp_ntk.ops.roots`: square roots that are 0, with a zero gradient, at 0;
* :mod:`~gp_ntk.ops.products`: outer products and the symmetrisation that keep :math:`k(X, X)`
  exactly symmetric, and in-place products on temporaries;
* :mod:`~gp_ntk.ops.polynomial`: Horner's rule;
* :mod:`~gp_ntk.ops.shapes`: broadcasting of shapes at a fraction of ``torch.broadcast_shapes``' cost,
  and gradients summed back to a broadcast input's shape;
* ``gp_ntk.ops.workspace``: matrix buffers kept between evaluations (no page faults on
  small blocks), reused only when nothing refers to them.

This package imports nothing else from gp_ntk.
"""

from __future__ import annotations

from .angular import arccos_j, arccos_j_coefficients, arccos_j_pair, double_factorial
from .autograd import gradient_nodes, wanted_gradients
from .correlation import (
    SNAP_ULPS,
    clamp_unit,
    correlation,
    gram_determinant,
    scaled_correlation,
    snap_factor,
    snapped_rsqrt,
    unit_diagonal,
)
from .polynomial import horner
from .products import grad_free, mul_temporary, outer, symmetrize
from .roots import masked_rsqrt, masked_sqrt
from .shapes import broadcast_shape, sum_to_shape

__all__ = [
    "SNAP_ULPS",
    "arccos_j",
    "arccos_j_coefficients",
    "arccos_j_pair",
    "broadcast_shape",
    "clamp_unit",
    "correlation",
    "double_factorial",
    "grad_free",
    "gradient_nodes",
    "gram_determinant",
    "horner",
    "masked_rsqrt",
    "masked_sqrt",
    "mul_temporary",
    "outer",
    "scaled_correlation",
    "snap_factor",
    "snapped_rsqrt",
    "sum_to_shape",
    "symmetrize",
    "unit_diagonal",
    "wanted_gradients",
]
