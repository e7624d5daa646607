r"""NNGP kernel of a deep fully-connected network (Lee et al., 2018; Matthews et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gpytorch.constraints import Interval
from gpytorch.priors import Prior
from torch import Tensor

from ..activations import Activation, get_activation
from ..ops import symmetrize
from ._contract import as_initial_values, as_integer, check_count, describe_activation
from .base import VarianceKernel

__all__ = ["NNGPKernel", "DeepNetworkKernel"]

_PARAMETERIZATIONS = ("ntk", "standard")


def _layer_count(name: str, depth: int, ard: bool, readout: bool = True) -> str:
    """What the per-layer values of variance ``name`` are, for error messages."""
    if not readout:
        ending = "readout=False: the network ends at its last activation, with no read-out layer's variance"
        if name == "weight_variance" and ard:
            return (
                f"depth - 1 = {depth - 1} per-layer values (layers 2 to depth: with ard_num_dims the "
                f"first layer's weights are input_weight_variance; {ending})"
            )
        return f"depth = {depth} per-layer values (one per affine layer; {ending})"
    if name == "weight_variance" and ard:
        return (
            f"depth = {depth} per-layer values (layers 2 to depth + 1: with ard_num_dims the first "
            "layer's weights are input_weight_variance)"
        )
    return f"depth + 1 = {depth + 1} per-layer values (one per affine layer)"


class DeepNetworkKernel(VarianceKernel):
    r"""Shared base of :class:`NNGPKernel` and :class:`~gp_ntk.NTKKernel`: the infinite-width limit of

    .. code-block:: python

        stax.serial(*[Dense(width, W_std, b_std), activation] * depth, Dense(1, W_std, b_std))

    with ``weight_variance = W_std**2`` and ``bias_variance = b_std**2``, NTK
    parameterization. With :math:`d` input features, :math:`\sigma_{w,l}^2, \sigma_{b,l}^2`
    the variances of layer :math:`l = 1 \dots L+1`:

    .. math::
        \Sigma^{(1)}(x, y) &= \frac{\sigma_{w,1}^2}{d}\, x^\top y + \sigma_{b,1}^2, \qquad
        \Theta^{(1)} = \Sigma^{(1)},\\
        \Sigma^{(l+1)} &= \sigma_{w,l+1}^2\,\mathbb E[\phi(u)\phi(v)] + \sigma_{b,l+1}^2,\qquad
        \Theta^{(l+1)} = \Sigma^{(l+1)} + \sigma_{w,l+1}^2\,\mathbb E[\phi'(u)\phi'(v)]\,\Theta^{(l)},

    :math:`(u, v)` Gaussian with covariance :math:`\Sigma^{(l)}` on :math:`\{x, y\}`. The
    NNGP kernel is :math:`\Sigma^{(L+1)}`, the NTK :math:`\Theta^{(L+1)}`.

    ``readout=False`` drops the read-out ``Dense(1, W_std, b_std)``: the network
    ``stax.serial(*[Dense(width, W_std, b_std), activation] * depth)`` ends at its last
    activation, has ``depth`` affine layers, and its kernels are those of one output unit,

    .. math::
        \mathcal K(x, y) = \mathbb E[\phi(u)\phi(v)], \qquad
        \Theta(x, y) = \mathbb E[\phi'(u)\phi'(v)]\,\Theta^{(L)}(x, y),

    :math:`(u, v)` with covariance :math:`\Sigma^{(L)}`: the last activation has no parameters,
    so it only carries the tangent kernel of the layers below through its derivative.

    Hyperparameters (all learnable, positive, with optional priors):

    * ``weight_variance``: one value shared by every layer (default) or, with
      ``per_layer=True``, one per layer (``depth + 1`` values; ``depth`` with ARD, the first
      layer then being the ARD one; one fewer with ``readout=False``);
    * ``bias_variance``: shared or per layer (``depth + 1``, or ``depth`` with
      ``readout=False``); ``0`` builds a bias-free network with no bias parameter at all;
    * ``input_weight_variance`` (with ``ard_num_dims``): first-layer weight variance per input
      feature, replacing :math:`\sigma_{w,1}^2` by :math:`\mathrm{diag}(\sigma_{w,1,i}^2)`.
    """

    _returns_ntk: bool = False

    def __init__(
        self,
        depth: int = 2,
        activation: str | Activation = "relu",
        weight_variance: float | Sequence[float] = 1.0,
        bias_variance: float | Sequence[float] = 0.1,
        parameterization: str = "ntk",
        ard_num_dims: int | None = None,
        per_layer: bool = False,
        width: int | None = None,
        weight_variance_prior: Prior | None = None,
        bias_variance_prior: Prior | None = None,
        weight_variance_constraint: Interval | None = None,
        bias_variance_constraint: Interval | None = None,
        readout: bool = True,
        **kwargs,
    ) -> None:
        depth = as_integer(depth, "depth must be an integer >= 1 (number of hidden layers)")
        if not isinstance(readout, (bool, np.bool_)):
            raise ValueError(
                "readout must be a bool (True: the network ends with a read-out affine layer; "
                f"False: it ends at its last activation), got {readout!r}"
            )
        readout = bool(readout)
        if not isinstance(parameterization, str) or parameterization.lower() not in _PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {_PARAMETERIZATIONS}, got {parameterization!r}"
            )
        parameterization = parameterization.lower()
        if parameterization == "standard":
            width = as_integer(
                width,
                "width (hidden-layer width, a positive integer) is required with parameterization='standard'",
            )
        elif width is not None:
            raise ValueError("width applies only to parameterization='standard'")
        activation = get_activation(activation)
        weights = as_initial_values(weight_variance, "weight_variance")
        biases = as_initial_values(bias_variance, "bias_variance")
        # lists, tuples, tensors and arrays alike: more than one value means per-layer values
        per_layer = bool(per_layer) or len(weights) > 1 or len(biases) > 1
        num_layers = depth + 1 if readout else depth
        ard = ard_num_dims is not None
        num_weights = (num_layers - 1 if ard else num_layers) if per_layer else 1
        if ard and num_layers == 1:
            # one affine layer, the ARD one: its per-feature variances are the only weights
            num_weights = 0
            check_count(
                weights,
                ard_num_dims,
                "weight_variance",
                f"ard_num_dims = {ard_num_dims} values (one per input feature: with readout=False "
                "and depth = 1 the ARD layer is the only affine layer)",
            )
        else:
            check_count(
                weights, num_weights, "weight_variance", _layer_count("weight_variance", depth, ard, readout)
            )
        check_count(biases, num_layers, "bias_variance", _layer_count("bias_variance", depth, ard, readout))
        super().__init__(
            weight_variance=weights,
            bias_variance=biases,
            num_weight_variances=num_weights,
            num_bias_variances=num_layers if per_layer else 1,
            ard_num_dims=ard_num_dims,
            weight_variance_prior=weight_variance_prior,
            bias_variance_prior=bias_variance_prior,
            weight_variance_constraint=weight_variance_constraint,
            bias_variance_constraint=bias_variance_constraint,
            **kwargs,
        )
        self.depth = depth
        self.activation = activation
        self.parameterization = parameterization
        self.width = width
        self.per_layer = per_layer
        self.readout = readout

    _divides_by_dim = True

    def _count_hint(self, name: str) -> str:
        if name == "input_weight_variance":
            return super()._count_hint(name)
        if self.per_layer:
            return _layer_count(name, self.depth, self.ard_num_dims is not None, self.readout)
        return "1 value shared by all layers (the kernel was built with per_layer=False)"

    def _structure(self) -> dict:
        structure = {
            **super()._structure(),
            "depth": self.depth,
            "activation": describe_activation(self.activation),
            "parameterization": self.parameterization,
            "width": self.width,
            "per_layer": self.per_layer,
        }
        if not self.readout:
            # (stored only when False: state dicts saved without the entry are read-out kernels')
            structure["readout"] = False
        return structure

    def _recursion_layers(self, like: Tensor, diag: bool, variances: dict[str, Tensor]) -> tuple[list, list]:
        """Weight and bias variances of the affine maps after the ``depth`` activations, shaped
        for the covariances: layers 2 .. depth + 1, or 2 .. depth and ``None`` (no affine map
        after the last activation) with ``readout=False``."""
        num_layers = self.depth + 1 if self.readout else self.depth
        end = [] if self.readout else [None]
        if self.ard_num_dims is not None:
            weights = []
            if num_layers > 1:
                weights = self._layer_values(variances["weight_variance"], num_layers - 1, like, diag)
        else:
            weights = self._layer_values(variances["weight_variance"], num_layers, like, diag)[1:]
        if not self.has_bias:
            return weights + end, [None] * self.depth
        return weights + end, self._layer_values(variances["bias_variance"], num_layers, like, diag)[1:] + end

    def _standard_ntk(self, x1: Tensor, x2: Tensor, diag: bool, symmetric: bool):
        if self.parameterization != "standard":
            return None
        # The first layer's gradients are x itself (no sigma_w / sqrt(d) factor) and 1 for a bias.
        if diag:
            theta = (x1 * x2).sum(-1)
        else:
            theta = x1 @ x2.mT
            theta = symmetrize(theta) if symmetric else theta
        return (theta + 1.0 if self.has_bias else theta), [self.width] * self.depth

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, activation={self.activation!r}, parameterization={self.parameterization!r}, "
            f"per_layer={self.per_layer}, bias={self.has_bias}" + ("" if self.readout else ", readout=False")
        )


class NNGPKernel(DeepNetworkKernel):
    r"""Output covariance (NNGP kernel) of an infinitely wide fully-connected network.

    ``NNGPKernel(depth=L)`` is :math:`\Sigma^{(L+1)}` of the network that neural-tangents
    writes as ``stax.serial(*[Dense(w, W_std, b_std), act] * L, Dense(1, W_std, b_std))``,
    with ``weight_variance = W_std**2`` and ``bias_variance = b_std**2`` (0: no biases), the
    first layer dividing :math:`x^\top y` by the input dimension :math:`d`. The recursion is
    given in :class:`DeepNetworkKernel`; ``docs/kernels.md`` maps the arguments to
    neural-tangents, BoTorch's ``InfiniteWidthBNNKernel`` and GPflow's ``ArcCosine``.

    Args:
        depth: number of hidden layers :math:`L \ge 1`.
        activation: a name from :data:`gp_ntk.activations.base.ACTIVATIONS` or an
            :class:`~gp_ntk.activations.Activation` (e.g. ``ArcCos(order=2)``, ``Numerical(torch.tanh)``).
        weight_variance: :math:`\sigma_w^2 > 0`, a number or ``depth + 1`` numbers (per layer).
        bias_variance: :math:`\sigma_b^2 \ge 0`, a number or ``depth + 1`` numbers; 0 disables biases.
        parameterization: ``"ntk"`` or ``"standard"``; the NNGP is the same in both.
        width: hidden-layer width, required with ``"standard"`` (see :class:`~gp_ntk.NTKKernel`).
        readout: ``False`` ends the network at its last activation (no read-out layer, ``depth``
            affine layers): the kernel of ``stax.serial(*[Dense(w, W_std, b_std), act] * L)``,
            :math:`\mathbb E[\phi(u)\phi(v)]` under :math:`\Sigma^{(L)}`.
        ard_num_dims: learn one first-layer weight variance per input feature.
        per_layer: one weight and bias variance per layer instead of shared ones.
        weight_variance_prior, bias_variance_prior: optional :class:`gpytorch.priors.Prior`.
        weight_variance_constraint, bias_variance_constraint: default ``Positive()``.
        **kwargs: ``batch_shape``, ``active_dims``, ... as for any :class:`gpytorch.kernels.Kernel`.

    Example:
        >>> import torch, gpytorch, gp_ntk
        >>> x = torch.randn(10, 3)
        >>> k = gp_ntk.NNGPKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)
        >>> K = gpytorch.kernels.ScaleKernel(k)(x).to_dense()  # 10 x 10
        >>> k(x, diag=True).shape
        torch.Size([10])

    .. [Lee2018] J. Lee, Y. Bahri, R. Novak, S. Schoenholz, J. Pennington, J. Sohl-Dickstein.
        Deep Neural Networks as Gaussian Processes. ICLR 2018.
    .. [Matthews2018] A. Matthews, M. Rowland, J. Hron, R. Turner, Z. Ghahramani.
        Gaussian Process Behaviour in Wide Deep Neural Networks. ICLR 2018.
    """

    _returns_ntk = False
