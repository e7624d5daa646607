r"""Williams' arcsine kernel: the covariance of an infinite erf network (Williams, 1996)."""

from __future__ import annotations

from ..activations import Erf
from ._single_layer import SingleLayerKernel

__all__ = ["ErfKernel"]


class ErfKernel(SingleLayerKernel):
    r"""Williams' (1996) kernel of a one-hidden-layer erf network with Gaussian weights.

    .. math::
        k(x, y) = \frac{2}{\pi}\arcsin\frac{2\tilde x^\top\Sigma\tilde y}
            {\sqrt{(1 + 2\tilde x^\top\Sigma\tilde x)(1 + 2\tilde y^\top\Sigma\tilde y)}},

    where :math:`\tilde x = (1, x)` and :math:`\Sigma = \mathrm{diag}(\sigma_b^2, \sigma_w^2, \dots)`
    (one :math:`\sigma_w^2` for all features, or one per feature with ``ard_num_dims``).
    This is :math:`\mathbb E[\mathrm{erf}(u)\mathrm{erf}(v)]` for :math:`u = w^\top\tilde x`,
    :math:`w \sim \mathcal N(0, \Sigma)`, i.e. the ``Erf`` activation's dual applied to
    :math:`\tilde x^\top\Sigma\tilde y`. There is no division by the input dimension here
    (Williams' form); ``NNGPKernel(depth=1, activation="erf")`` is the neural-tangents form
    with :math:`\sigma_w^2/d` and a readout layer.

    Args:
        weight_variance: :math:`\sigma_w^2 > 0`; with ``ard_num_dims``, one value or a list of one
            value per input feature (the kernel then has ``input_weight_variance`` only).
        bias_variance: :math:`\sigma_b^2 \ge 0` (0 drops the prepended 1 and its parameter).
        ard_num_dims: one weight variance per input feature (``input_weight_variance``).
        **kwargs: ``weight_variance_prior``, ``bias_variance_prior``, ``weight_variance_constraint``,
            ``bias_variance_constraint`` and GPyTorch's ``Kernel`` arguments.

    Example:
        >>> import torch, gp_ntk
        >>> k = gp_ntk.ErfKernel(weight_variance=1.0, bias_variance=1.0)
        >>> round(k(torch.zeros(1, 2)).to_dense().item(), 6)  # (2/pi) asin(2/3)
        0.464559

    .. [Williams1996] C. K. I. Williams. Computing with Infinite Networks. NeurIPS 1996.
    """

    activation = Erf()

    def _recursion_layers(self, like, diag, variances):
        # the kernel is the activation's dual of the first layer's covariances itself
        return [1.0], [None]
