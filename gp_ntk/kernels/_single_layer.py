"""The shared constructor of kernels with one affine layer of input weights and one bias."""

from __future__ import annotations

from collections.abc import Sequence

from gpytorch.constraints import Interval
from gpytorch.priors import Prior

from ._contract import as_initial_values, check_single_layer_counts
from .base import VarianceKernel

__all__ = ["SingleLayerKernel"]


class SingleLayerKernel(VarianceKernel):
    """A ``VarianceKernel`` with one weight variance (or one per input
    feature with ``ard_num_dims``) and one bias variance, as the arc-cosine and erf kernels have.
    """

    def __init__(
        self,
        weight_variance: float | Sequence[float] = 1.0,
        bias_variance: float = 1.0,
        ard_num_dims: int | None = None,
        weight_variance_prior: Prior | None = None,
        bias_variance_prior: Prior | None = None,
        weight_variance_constraint: Interval | None = None,
        bias_variance_constraint: Interval | None = None,
        **kwargs,
    ) -> None:
        weights = as_initial_values(weight_variance, "weight_variance")
        biases = as_initial_values(bias_variance, "bias_variance")
        check_single_layer_counts(type(self).__name__, weights, biases, ard_num_dims)
        super().__init__(
            weight_variance=weights,
            bias_variance=biases,
            num_weight_variances=0 if ard_num_dims is not None else 1,
            num_bias_variances=1,
            ard_num_dims=ard_num_dims,
            weight_variance_prior=weight_variance_prior,
            bias_variance_prior=bias_variance_prior,
            weight_variance_constraint=weight_variance_constraint,
            bias_variance_constraint=bias_variance_constraint,
            **kwargs,
        )
