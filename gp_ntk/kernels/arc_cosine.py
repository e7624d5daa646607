r"""Arc-cosine kernels of any order (Cho & Saul, 2009), with multi-layer composition."""

from __future__ import annotations

from collections.abc import Sequence

from ..activations import ArcCos
from ._contract import as_integer
from ._single_layer import SingleLayerKernel

__all__ = ["ArcCosineKernel"]


class ArcCosineKernel(SingleLayerKernel):
    r"""Cho & Saul's arc-cosine kernel of order :math:`n`, composed over ``num_layers`` layers.

    With the inner product :math:`\langle x, y\rangle = \sigma_b^2 + x^\top \mathrm{diag}(\sigma_w^2)\, y`
    (GPflow's form; no division by the input dimension) and
    :math:`\cos\theta = \langle x, y\rangle / \sqrt{\langle x, x\rangle\langle y, y\rangle}`:

    .. math::
        k_n(x, y) = \frac{1}{\pi}\,\langle x, x\rangle^{n/2}\langle y, y\rangle^{n/2}\,J_n(\theta),\qquad
        J_n(\theta) = (-1)^n(\sin\theta)^{2n+1}\Big(\frac{1}{\sin\theta}\frac{\partial}{\partial\theta}\Big)^n
            \frac{\pi-\theta}{\sin\theta},

    so :math:`J_0 = \pi - \theta`, :math:`J_1 = \sin\theta + (\pi-\theta)\cos\theta`,
    :math:`J_2 = 3\sin\theta\cos\theta + (\pi-\theta)(1+2\cos^2\theta)`; any integer
    :math:`n \ge 0` is supported (:func:`gp_ntk.ops.arccos_j`). With
    ``num_layers = L > 1`` the map is applied recursively, :math:`k^{(l+1)}(x, y) = \frac1\pi
    [k^{(l)}(x,x)k^{(l)}(y,y)]^{n/2} J_n(\theta^{(l)})`, as in Cho & Saul's multilayer kernel.

    Normalisation: :math:`k_n = 2\,\mathbb E[\Theta(u)u^n\,\Theta(v)v^n]`, twice the NNGP dual
    of ``ArcCos(n)``; :math:`k_1` is twice the ReLU NNGP of a one-hidden-layer network. GPflow's
    ``ArcCosine(order, variance, weight_variances, bias_variance)`` equals
    ``ScaleKernel(ArcCosineKernel(order, 1, weight_variances, bias_variance))`` with
    ``outputscale = variance``. Zero-norm inputs without bias have an undefined angle; the
    kernel uses :math:`\cos\theta = 0` there (so :math:`k_n = 0` for :math:`n \ge 1` and
    :math:`k_0 = 1/2`), with finite gradients.

    Args:
        order: :math:`n`, a non-negative integer.
        num_layers: number of compositions :math:`L \ge 1`.
        weight_variance: :math:`\sigma_w^2 > 0`; with ``ard_num_dims``, one value or a list of one
            value per input feature (the kernel then has ``input_weight_variance`` only).
        bias_variance: :math:`\sigma_b^2 \ge 0`; 0 disables the bias (no parameter).
        ard_num_dims: one weight variance per input feature (stored as ``input_weight_variance``).
        **kwargs: ``weight_variance_prior``, ``bias_variance_prior``, ``weight_variance_constraint``,
            ``bias_variance_constraint`` and GPyTorch's ``Kernel`` arguments.

    Example:
        >>> import torch, gp_ntk
        >>> k = gp_ntk.ArcCosineKernel(order=2, num_layers=3, weight_variance=1.0, bias_variance=0.5)
        >>> k(torch.randn(5, 2)).to_dense().shape
        torch.Size([5, 5])

    .. [Cho2009] Y. Cho, L. Saul. Kernel Methods for Deep Learning. NeurIPS 2009.
    """

    def __init__(
        self,
        order: int = 1,
        num_layers: int = 1,
        weight_variance: float | Sequence[float] = 1.0,
        bias_variance: float = 1.0,
        ard_num_dims: int | None = None,
        **kwargs,
    ) -> None:
        activation = ArcCos(order)  # validates order
        num_layers = as_integer(num_layers, "num_layers must be an integer >= 1")
        super().__init__(weight_variance, bias_variance, ard_num_dims, **kwargs)
        self.order = activation.order
        self.num_layers = num_layers
        self.activation = activation

    def _recursion_layers(self, like, diag, variances):
        # k_n = 2 E[phi(u) phi(v)]: each composition is a layer with weight variance 2, no bias
        return [2.0] * self.num_layers, [None] * self.num_layers

    def _structure(self) -> dict:
        return {**super()._structure(), "order": self.order, "num_layers": self.num_layers}

    def extra_repr(self) -> str:
        return f"order={self.order}, num_layers={self.num_layers}, bias={self.has_bias}"
