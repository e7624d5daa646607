r"""Finite random networks whose infinite-width limits are the gp_ntk kernels.

:class:`NetworkMLP` is the fully-connected network that :class:`~gp_ntk.NNGPKernel` and
:class:`~gp_ntk.NTKKernel` describe as its width grows: with every weight and bias entry drawn
iid :math:`\mathcal N(0, 1)`, layer :math:`l` computes

.. math::
    z^{(l)} = \sqrt{\sigma_{w,l}^2 / n_{l-1}}\; W^{(l)} h^{(l-1)} + \sqrt{\sigma_{b,l}^2}\; b^{(l)}
    \quad\text{(NTK parameterization)},

:math:`h^{(l)} = \phi(z^{(l)})`, :math:`h^{(0)} = x`, :math:`n_0 = d`; the output is the read-out
:math:`z^{(L+1)}`. In the standard parameterization the same scale multiplies the *initial*
weights instead (``W`` starts as :math:`\mathcal N(0, \sigma_w^2/n_{l-1})`, the bias as
:math:`\mathcal N(0, \sigma_b^2)`), so that the function at initialisation is the same but its
parameter gradients, hence its tangent kernel, are not rescaled. This is neural-tangents'
``stax.serial(*[Dense(width, W_std, b_std), act] * L, Dense(1, W_std, b_std))``.

As ``width`` grows, the outputs of independent draws are Gaussian with covariance the NNGP
kernel, and the empirical tangent kernel :math:`\nabla_\theta f(x)^\top \nabla_\theta f(y)`
converges to the NTK [Jacot2018]_ [Lee2019]_.

Example:
    >>> import torch, gp_ntk
    >>> kernel = gp_ntk.NTKKernel(depth=2, activation="erf", weight_variance=2.0, bias_variance=0.1)
    >>> net = gp_ntk.networks.from_kernel(kernel, in_features=3, width=64, generator=torch.Generator().manual_seed(0))
    >>> net(torch.randn(5, 3)).shape
    torch.Size([5])

.. [Jacot2018] A. Jacot, F. Gabriel, C. Hongler. Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks. NeurIPS 2018.
.. [Lee2019] J. Lee, L. Xiao, S. Schoenholz, Y. Bahri, R. Novak, J. Sohl-Dickstein, J. Pennington.
    Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent. NeurIPS 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .activations import Activation, get_activation

__all__ = ["NetworkMLP", "from_kernel"]

_PARAMETERIZATIONS = ("ntk", "standard")


def _per_layer(value: float | Sequence[float] | Tensor, count: int, name: str) -> list[float]:
    values = torch.as_tensor(value, dtype=torch.float64).reshape(-1).tolist()
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ValueError(f"{name} needs 1 or {count} values (one per layer), got {len(values)}")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{name} must be finite and non-negative, got {values}")
    return values


class NetworkMLP(nn.Module):
    r"""A finite fully-connected network in the NTK (or standard) parameterization.

    Args:
        in_features: input dimension :math:`d`.
        width: hidden-layer width :math:`n` (the limit :math:`n \to \infty` is the kernel).
        depth: number of hidden layers :math:`L \ge 1`.
        activation: a name or :class:`~gp_ntk.activations.Activation` (applied elementwise).
        weight_variance: :math:`\sigma_w^2`, one value or ``depth + 1`` values (per layer).
        bias_variance: :math:`\sigma_b^2`, one value or ``depth + 1``; 0 everywhere: no biases.
        parameterization: ``"ntk"`` (weights N(0, 1), scaled in the forward pass) or
            ``"standard"`` (the scale in the initial weights).
        out_features: read-out width; the output is ``(n,)`` for 1 and ``(n, out_features)`` else.
        readout: ``False`` ends the network at the last activation (its output is the
            ``(n, width)`` post-activations, no read-out layer).
        input_weight_variance: optional per-feature first-layer variances (ARD), ``(d,)``.
        generator, dtype, device: where and how the N(0, 1) draws are made.

    The layers are plain :class:`torch.nn.Linear` modules (``self.layers``), so the network
    trains with any optimiser and works with ``torch.func``.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        activation: str | Activation = "relu",
        weight_variance: float | Sequence[float] | Tensor = 1.0,
        bias_variance: float | Sequence[float] | Tensor = 0.1,
        parameterization: str = "ntk",
        out_features: int = 1,
        readout: bool = True,
        input_weight_variance: Sequence[float] | Tensor | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        if parameterization not in _PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {_PARAMETERIZATIONS}, got {parameterization!r}"
            )
        self.activation = get_activation(activation)
        self.depth, self.width, self.readout = depth, width, bool(readout)
        self.parameterization = parameterization
        num_layers = depth + 1 if readout else depth
        weights = _per_layer(weight_variance, depth + 1, "weight_variance")[:num_layers]
        biases = _per_layer(bias_variance, depth + 1, "bias_variance")[:num_layers]
        has_bias = any(b > 0 for b in biases)
        sizes = [in_features] + [width] * depth + ([out_features] if readout else [])
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, bias=has_bias, dtype=dtype, device=device)
            for n_in, n_out in zip(sizes, sizes[1:])
        )
        # per-layer scale of the weights (a row vector for the ARD first layer) and of the biases
        scales = [
            torch.full((n_in,), math.sqrt(w / n_in), dtype=torch.float64) for w, n_in in zip(weights, sizes)
        ]
        if input_weight_variance is not None:
            ard = torch.as_tensor(input_weight_variance, dtype=torch.float64).reshape(-1)
            if ard.numel() != in_features or not bool((ard > 0).all()):
                raise ValueError(
                    f"input_weight_variance must be {in_features} positive values, got {ard.tolist()}"
                )
            scales[0] = torch.sqrt(ard / in_features)
        with torch.no_grad():
            for layer, scale, b in zip(self.layers, scales, biases):
                layer.weight.normal_(generator=generator)
                if layer.bias is not None:
                    layer.bias.normal_(generator=generator)
                if parameterization == "standard":
                    layer.weight.mul_(scale.to(layer.weight))
                    if layer.bias is not None:
                        layer.bias.mul_(math.sqrt(b))
        factory = {"dtype": self.layers[0].weight.dtype, "device": self.layers[0].weight.device}
        for i, (scale, b) in enumerate(zip(scales, biases)):
            self.register_buffer(f"_weight_scale_{i}", scale.to(**factory), persistent=False)
            self.register_buffer(f"_bias_scale_{i}", torch.tensor(math.sqrt(b), **factory), persistent=False)

    def _affine(self, index: int, h: Tensor) -> Tensor:
        layer = self.layers[index]
        if self.parameterization == "standard":
            return layer(h)
        z = (h * getattr(self, f"_weight_scale_{index}")) @ layer.weight.T
        if layer.bias is None:
            return z
        return z + getattr(self, f"_bias_scale_{index}") * layer.bias

    def hidden(self, x: Tensor) -> Tensor:
        """Post-activations of the last hidden layer, ``(n, width)``."""
        h = x
        for index in range(self.depth):
            h = self.activation(self._affine(index, h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        h = self.hidden(x)
        if not self.readout:
            return h
        out = self._affine(self.depth, h)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def from_kernel(
    kernel,
    in_features: int,
    width: int,
    out_features: int = 1,
    readout: bool | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> NetworkMLP:
    r"""The finite network whose infinite-width NNGP/NTK is ``kernel``.

    ``kernel`` is an :class:`~gp_ntk.NNGPKernel` or :class:`~gp_ntk.NTKKernel` (no batch shape);
    its depth, activation, parameterization and current variances (shared, per layer or ARD)
    are copied, in the kernel's dtype. ``readout`` defaults to the kernel's: a kernel built
    with ``readout=False`` gives the network that ends at its last activation, each of whose
    ``width`` outputs has that kernel in the limit.
    """
    from .kernels.nngp import DeepNetworkKernel

    if not isinstance(kernel, DeepNetworkKernel):
        raise ValueError(f"kernel must be an NNGPKernel or NTKKernel, got {type(kernel).__name__}")
    if len(kernel.batch_shape) > 0:
        raise ValueError(f"kernel must have no batch_shape, got {tuple(kernel.batch_shape)}")
    if readout is None:
        readout = kernel.readout
    elif not isinstance(readout, bool):
        raise ValueError(f"readout must be a bool or None (the kernel's), got {readout!r}")
    if readout and not kernel.readout:
        raise ValueError(
            "readout=True needs the read-out layer's variances, which a kernel built with "
            "readout=False does not have"
        )
    # per-layer values of the kernel's affine layers; a network with a read-out takes depth + 1
    num_layers = kernel.depth + 1 if kernel.readout else kernel.depth
    variances = kernel._variances()
    weights = variances["weight_variance"].detach().reshape(-1) if "weight_variance" in variances else None
    ard = kernel.input_weight_variance
    if ard is not None:
        ard = ard.detach().reshape(-1)
        # with ARD the per-layer weights are those of layers 2 .. L + 1; the first layer's is ARD
        weights = torch.ones(1) if weights is None else weights
        weights = weights.repeat(num_layers - 1) if weights.numel() == 1 else weights
        weights = torch.cat([torch.ones(1, dtype=weights.dtype), weights])
    biases = kernel.bias_variance.detach().reshape(-1) if kernel.has_bias else torch.zeros(1)
    if not kernel.readout:
        # NetworkMLP takes one value or depth + 1 (the read-out's last, unused without it)
        weights = _padded(weights, kernel.depth)
        biases = _padded(biases, kernel.depth)
    return NetworkMLP(
        in_features=in_features,
        width=width,
        depth=kernel.depth,
        activation=kernel.activation,
        weight_variance=weights,
        bias_variance=biases,
        parameterization=kernel.parameterization,
        out_features=out_features,
        readout=readout,
        input_weight_variance=ard,
        generator=generator,
        dtype=kernel.raw_bias_variance.dtype if kernel.has_bias else next(kernel.parameters()).dtype,
        device=device,
    )


def _padded(values: Tensor, count: int) -> Tensor:
    """``count`` per-layer values (or one) padded with an unused last value to ``count + 1``."""
    if values.numel() == 1:
        return values
    return torch.cat([values, values[-1:]])
