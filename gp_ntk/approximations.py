r"""Random-feature approximations of the network kernels, as GPyTorch kernels with a low-rank root.

:class:`RandomFeatureKernel` replaces a kernel :math:`k` by :math:`\hat k(x, y) = \phi(x)^\top\phi(y)`
with an explicit random feature map :math:`\phi: \mathbb R^d \to \mathbb R^D` whose inner products
converge to :math:`k` as :math:`D \to \infty` (entrywise error :math:`O(1/\sqrt D)`). Like
GPyTorch's ``RFFKernel`` it returns ``LowRankRootLinearOperator(phi(X))``, so an exact GP with
Gaussian noise trains and predicts in :math:`O(nD^2)` time and :math:`O(nD)` memory (Woodbury).

Feature maps, by base kernel:

* :class:`~gp_ntk.NNGPKernel` (any activation, depth, per-layer or ARD variances): the last
  hidden layer of a finite random network of width :math:`D` (:func:`gp_ntk.networks.from_kernel`),
  scaled by the read-out layer, :math:`\phi(x) = [\sigma_{w,L+1} h^{(L)}(x)/\sqrt D,\ \sigma_{b,L+1}]`:
  :math:`\phi(x)^\top\phi(y) = \frac{\sigma_{w,L+1}^2}{D}\sum_i h_i(x)h_i(y) + \sigma_{b,L+1}^2 \to
  \Sigma^{(L+1)}(x, y)`; without read-out (``readout=False``), :math:`\phi(x) = h^{(L)}(x)/\sqrt D`.
* :class:`~gp_ntk.ArcCosineKernel`: Cho & Saul's features [Cho2009]_, per composition
  :math:`h \mapsto \sqrt{2/D}\,\Theta(Wh)(Wh)^n`, :math:`W_{ij} \sim \mathcal N(0, 1)`, starting
  from :math:`\tilde x = (\sigma_b, \sigma_w \odot x)`.
* :class:`~gp_ntk.ErfKernel`: :math:`\phi(x) = \mathrm{erf}(W\tilde x)/\sqrt D`, :math:`\tilde x =
  (\sigma_b, \sigma_w\odot x)`.
* :class:`~gp_ntk.NTKKernel` (NTK parameterization): gradient features
  :math:`\phi(x) = \nabla_\theta f(x; \theta_0)` of a finite random network
  (:func:`~gp_ntk.networks.from_kernel` with a read-out) at its initialisation; the empirical
  tangent kernel converges to the NTK as the width grows [Jacot2018]_. The width is the largest
  whose parameter count is at most ``num_features``; the feature dimension is that count.

The arc-cosine and erf features are differentiable in the kernel's variances (the random draws
are fixed, the scales are the live hyperparameters), so a GP can learn them. The NNGP and NTK
features are drawn for the base kernel's hyperparameters at construction (a network's weights
carry them); after changing those, call :meth:`RandomFeatureKernel.resample`.

:class:`NeuralEFKernel` is the low-rank kernel of fitted NeuralEF eigenfunctions
(:class:`gp_ntk.spectral.NeuralEigenfunctions`), :math:`\hat k(x, y) = \sum_j \lambda_j
\psi_j(x)\psi_j(y)`, with the same ``LowRankRootLinearOperator`` structure: learned rather than
random features, :math:`k` of them, fitted on minibatches of any number of points.

For a :class:`~gp_ntk.kernels.UnitVarianceKernel` around one of these kernels the features are
those of the inner kernel divided by their norm, :math:`\phi(x)/\lVert\phi(x)\rVert`: the
approximation keeps the exact unit diagonal, and its off-diagonal entries converge to
:math:`k(x, y)/\sqrt{k(x, x)k(y, y)}`.

These features are also BoTorch's pathwise feature maps for the network kernels
(``draw_matheron_paths``, ``get_optimal_samples``, pathwise Thompson sampling), registered by
:mod:`gp_ntk.bo.pathwise` when :mod:`gp_ntk.bo` is imported (BoTorch is an optional extra).

.. [Cho2009] Y. Cho, L. Saul. Kernel Methods for Deep Learning. NeurIPS 2009.
.. [Jacot2018] A. Jacot, F. Gabriel, C. Hongler. Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks. NeurIPS 2018.
"""

from __future__ import annotations

import copy
import math

import torch
from gpytorch.kernels import Kernel
from linear_operator.operators import LowRankRootLinearOperator, MatmulLinearOperator
from torch import Tensor, nn

from .kernels import ArcCosineKernel, ErfKernel, NTKKernel, UnitVarianceKernel
from .kernels.nngp import DeepNetworkKernel
from .networks import from_kernel

__all__ = ["NeuralEFKernel", "RandomFeatureKernel"]


def _ntk_width(in_features: int, depth: int, has_bias: bool, num_features: int) -> int:
    """The largest width whose network (with a scalar read-out) has <= num_features parameters."""

    def count(width: int) -> int:
        weights = in_features * width + (depth - 1) * width * width + width
        return weights + ((depth * width + 1) if has_bias else 0)

    width = 1
    while count(width + 1) <= num_features:
        width += 1
    if count(width) > num_features:
        raise ValueError(
            f"num_features={num_features} is below the parameter count {count(1)} of a width-1 network"
        )
    return width


class _NetworkFeatures(nn.Module):
    """Read-out-scaled last hidden layer of a random network: NNGP features."""

    def __init__(self, kernel: DeepNetworkKernel, in_features: int, width: int, generator) -> None:
        super().__init__()
        self.network = from_kernel(kernel, in_features, width, out_features=1, generator=generator)
        # fixed draws: gradients flow to the inputs (for optimising sample paths), not to them
        self.network.requires_grad_(False)
        depth = kernel.depth
        if kernel.readout:
            scale = getattr(self.network, f"_weight_scale_{depth}").clone()
            bias = float(getattr(self.network, f"_bias_scale_{depth}"))
        else:
            # a network without read-out: the kernel is the mean of h_i(x) h_i(y) over the units
            scale = torch.full_like(self.network._weight_scale_0[:1], 1.0 / math.sqrt(width)).expand(width)
            bias = 0.0
        self.register_buffer("readout_scale", scale.clone())
        self.bias_feature = bias if bias > 0 else None
        self.num_outputs = width + (1 if self.bias_feature is not None else 0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.network.hidden(x.to(self.readout_scale)) * self.readout_scale
        if self.bias_feature is None:
            return h
        return torch.cat([h, torch.full_like(h[..., :1], self.bias_feature)], dim=-1)


class _GradientFeatures(nn.Module):
    """Parameter gradients of a random network at initialisation: empirical-NTK features."""

    def __init__(self, kernel: NTKKernel, in_features: int, num_features: int, generator) -> None:
        super().__init__()
        if kernel.parameterization != "ntk":
            raise ValueError(
                "NTK random features need parameterization='ntk' (the standard NTK is width-bound)"
            )
        if not kernel.readout:
            raise ValueError(
                "NTK random features need a read-out layer (a scalar network output); the kernel "
                "was built with readout=False"
            )
        width = _ntk_width(in_features, kernel.depth, kernel.has_bias, num_features)
        self.network = from_kernel(kernel, in_features, width, out_features=1, generator=generator)
        self.width = width
        self.num_outputs = sum(p.numel() for p in self.network.parameters())

    def forward(self, x: Tensor) -> Tensor:
        from torch.func import functional_call, jacrev, vmap

        params = {name: p.detach() for name, p in self.network.named_parameters()}
        flat = x.reshape(-1, x.shape[-1]).to(next(iter(params.values())))

        def output(values: dict, point: Tensor) -> Tensor:
            return functional_call(self.network, values, (point.unsqueeze(0),)).reshape(())

        chunks = []
        # chunks bound the per-sample Jacobian intermediates
        for start in range(0, flat.shape[0], 1024):
            jac = vmap(jacrev(output), in_dims=(None, 0))(params, flat[start : start + 1024])
            chunks.append(torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=-1))
        features = torch.cat(chunks) if chunks else flat.new_zeros(0, self.num_outputs)
        return features.reshape(*x.shape[:-1], self.num_outputs)


class _CompositionFeatures(nn.Module):
    r"""Features of the arc-cosine (``order`` n, L compositions) and erf kernels, differentiable
    in the kernel's variances: the random directions are fixed N(0, 1) draws."""

    def __init__(self, kernel: Kernel, in_features: int, num_features: int, generator, dtype) -> None:
        super().__init__()
        self.kernel = kernel
        self.is_erf = isinstance(kernel, ErfKernel)
        num_layers = 1 if self.is_erf else kernel.num_layers
        augmented = in_features + (1 if kernel.has_bias else 0)
        sizes = [augmented] + [num_features] * num_layers
        for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            draw = torch.randn(n_out, n_in, generator=generator, dtype=torch.float64).to(dtype)
            self.register_buffer(f"directions_{index}", draw)
        self.num_layers = num_layers
        self.num_outputs = num_features

    def _augmented(self, x: Tensor) -> Tensor:
        kernel = self.kernel
        if kernel.ard_num_dims is not None:
            scale = kernel.input_weight_variance.reshape(-1).sqrt()
        else:
            scale = kernel.weight_variance.reshape(-1)[:1].sqrt()
        x = x * scale.to(x)
        if not kernel.has_bias:
            return x
        bias = kernel.bias_variance.reshape(-1)[:1].sqrt().to(x)
        return torch.cat([bias.expand(*x.shape[:-1], 1), x], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        h = self._augmented(x.to(self.directions_0))
        if self.is_erf:
            return torch.erf(h @ self.directions_0.T) / math.sqrt(self.num_outputs)
        order = self.kernel.order
        for index in range(self.num_layers):
            z = h @ getattr(self, f"directions_{index}").T
            rectified = (z > 0).to(z) * (z.pow(order) if order > 0 else torch.ones_like(z))
            h = math.sqrt(2.0 / self.num_outputs) * rectified
        return h


def _supported(kernel) -> bool:
    if isinstance(kernel, UnitVarianceKernel):
        kernel = kernel.base_kernel
    return isinstance(kernel, (DeepNetworkKernel, ArcCosineKernel, ErfKernel))


class RandomFeatureKernel(Kernel):
    r"""A network kernel approximated by :math:`D` explicit random features.

    :math:`\hat k(x, y) = \phi(x)^\top\phi(y)` with the feature map of the base kernel's type
    (module docstring); :math:`\mathbb E\,\hat k = k` for the NNGP, arc-cosine and erf features
    and :math:`\hat k \to k` in probability for all, with error :math:`O(1/\sqrt D)`.

    Args:
        base_kernel: an :class:`~gp_ntk.NNGPKernel`, :class:`~gp_ntk.NTKKernel`,
            :class:`~gp_ntk.ArcCosineKernel` or :class:`~gp_ntk.ErfKernel` without batch shape,
            or a :class:`~gp_ntk.kernels.UnitVarianceKernel` around one.
        num_features: :math:`D`: the hidden width for the NNGP (plus one bias feature), the
            number of directions for arc-cosine and erf, the parameter budget for the NTK.
        in_features: input dimension; by default taken from the first input (as ``RFFKernel``).
        seed: seed of the random draws (the same seed gives the same features).

    ``k(X)`` is a ``LowRankRootLinearOperator``; ``k(X1, X2)`` a ``MatmulLinearOperator``.

    Example:
        >>> rf = gp_ntk.RandomFeatureKernel(gp_ntk.NNGPKernel(depth=2), num_features=512)
        >>> train_x = torch.randn(100, 3)
        >>> model = gp_ntk.ExactGPModel(train_x, torch.sin(train_x[:, 0]), kernel=rf)
        >>> type(rf(train_x).evaluate_kernel()).__name__
        'LowRankRootLinearOperator'
    """

    has_lengthscale = False

    def __init__(
        self, base_kernel: Kernel, num_features: int, in_features: int | None = None, seed: int = 0, **kwargs
    ) -> None:
        if not _supported(base_kernel):
            raise ValueError(
                "base_kernel must be an NNGPKernel, NTKKernel, ArcCosineKernel or ErfKernel, or a "
                "UnitVarianceKernel around one, "
                f"got {type(base_kernel).__name__}"
            )
        if len(base_kernel.batch_shape) > 0:
            raise ValueError(f"base_kernel must have no batch_shape, got {tuple(base_kernel.batch_shape)}")
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        if in_features is not None and (
            isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1
        ):
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        super().__init__(**kwargs)
        self.base_kernel = base_kernel
        self.num_features = num_features
        self.seed = int(seed)
        self.feature_map: nn.Module | None = None
        if in_features is not None:
            self._draw(in_features)

    @property
    def in_features(self) -> int | None:
        return None if self.feature_map is None else self._in_features

    @property
    def num_outputs(self) -> int:
        """Dimension of the feature map (drawn on first use if ``in_features`` was not given)."""
        if self.feature_map is None:
            raise ValueError("the features are drawn on first use; pass in_features to know their number")
        return self.feature_map.num_outputs

    @property
    def _network_kernel(self) -> Kernel:
        """The network kernel whose features are drawn (inside a ``UnitVarianceKernel`` if any)."""
        base = self.base_kernel
        return base.base_kernel if isinstance(base, UnitVarianceKernel) else base

    def _draw(self, in_features: int) -> None:
        base = self._network_kernel
        generator = torch.Generator().manual_seed(self.seed)
        if base.ard_num_dims is not None and base.ard_num_dims != in_features:
            raise ValueError(f"inputs must have ard_num_dims={base.ard_num_dims} features, got {in_features}")
        dtype = next(base.parameters()).dtype
        if isinstance(base, NTKKernel):
            feature_map = _GradientFeatures(base, in_features, self.num_features, generator)
        elif isinstance(base, DeepNetworkKernel):
            feature_map = _NetworkFeatures(base, in_features, self.num_features, generator)
        else:
            feature_map = _CompositionFeatures(base, in_features, self.num_features, generator, dtype)
        self.feature_map = feature_map
        self._in_features = in_features

    def resample(self, seed: int | None = None) -> None:
        """Draw the features again (with ``seed``, or the stored one) for the base kernel's
        current hyperparameters."""
        if seed is not None:
            self.seed = int(seed)
        if self.feature_map is not None:
            self._draw(self._in_features)

    def features(self, x: Tensor) -> Tensor:
        r"""``(..., n, D)`` the features :math:`\phi(x)` of ``(..., n, d)`` inputs (the base
        kernel's ``active_dims`` applied)."""
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a (..., n, d) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x has NaN or infinite entries")
        network = self._network_kernel
        for kernel in dict.fromkeys((self.base_kernel, network)):
            if kernel.active_dims is not None:
                x = x.index_select(-1, kernel.active_dims.to(x.device))
        if self.feature_map is None:
            self._draw(x.shape[-1])
        elif x.shape[-1] != self._in_features:
            raise ValueError(f"inputs must have {self._in_features} features, got {x.shape[-1]}")
        features = self.feature_map(x)
        if network is self.base_kernel:
            return features
        # by the features' own norm, not the exact variance: the diagonal is then exactly 1
        norm_sq = features.square().sum(-1, keepdim=True)
        return features * norm_sq.clamp_min(torch.finfo(norm_sq.dtype).tiny).rsqrt()

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError("RandomFeatureKernel does not support last_dim_is_batch")
        return _feature_product(self.features, x1, x2, diag)


def _feature_product(features, x1: Tensor, x2: Tensor, diag: bool):
    """``phi(x1) phi(x2)^T`` as a low-rank root (symmetric) or a product operator, or its diagonal."""
    z1 = features(x1)
    symmetric = x1 is x2 or (x1.shape == x2.shape and bool(torch.equal(x1, x2)))
    z2 = z1 if symmetric else features(x2)
    if diag:
        return (z1 * z2).sum(-1)
    if symmetric:
        return LowRankRootLinearOperator(z1)
    return MatmulLinearOperator(z1, z2.transpose(-1, -2))


class NeuralEFKernel(Kernel):
    r"""The rank-:math:`k` kernel of fitted NeuralEF eigenfunctions.

    With eigenvalues :math:`\lambda_j` and eigenfunctions :math:`\psi_j` of
    :class:`~gp_ntk.spectral.NeuralEigenfunctions`,

    .. math::
        \hat k(x, y) = \sum_{j=1}^k \lambda_j\,\psi_j(x)\,\psi_j(y) = \phi(x)^\top\phi(y),
        \qquad \phi_j(x) = \sqrt{\lambda_j}\,\psi_j(x),

    the truncated Mercer expansion of the fitted kernel: :math:`\hat k(X, X)` is
    :math:`\Psi\,\mathrm{diag}(\lambda)\,\Psi^\top` with :math:`\Psi = \psi(X)`, returned as
    ``LowRankRootLinearOperator(phi(X))``, so an exact GP with Gaussian noise trains and predicts in
    :math:`O(nk^2)` time and :math:`O(nk)` memory. After the Rayleigh–Ritz step of ``fit`` the
    :math:`\psi_j` are orthonormal on its points and :math:`\hat k` is the kernel's projection on
    their span there. As an operator eigenvalue, :math:`\lambda_j`
    approximates :math:`1/n` times the matrix eigenvalue, so :math:`\hat k` approximates
    :math:`k` itself (its top-:math:`k` part), not :math:`k/n`.

    Args:
        eigenfunctions: fitted :class:`~gp_ntk.spectral.NeuralEigenfunctions`. The kernel keeps a
            frozen copy: refitting the original afterwards does not change it, and a GP that
            trains with this kernel learns only its own hyperparameters (wrap it in
            ``ScaleKernel`` for an output scale), not the networks.
        chunk_size: rows per evaluation of the networks (bounds the memory of their hidden
            activations, ``k * chunk_size * hidden_features`` numbers).

    Gradients reach the inputs (for acquisition optimisation), not the copied networks.

    Example:
        >>> from gp_ntk.spectral import NeuralEigenfunctions
        >>> x = torch.randn(200, 2)
        >>> nef = NeuralEigenfunctions(gp_ntk.NNGPKernel(depth=2), num_eigenfunctions=3).fit(x, steps=5)
        >>> kernel = gp_ntk.approximations.NeuralEFKernel(nef)
        >>> type(kernel(x).evaluate_kernel()).__name__, kernel.num_outputs
        ('LowRankRootLinearOperator', 3)
    """

    has_lengthscale = False

    def __init__(self, eigenfunctions, chunk_size: int = 4096, **kwargs) -> None:
        from .spectral import NeuralEigenfunctions

        if not isinstance(eigenfunctions, NeuralEigenfunctions):
            raise ValueError(
                f"eigenfunctions must be a NeuralEigenfunctions, got {type(eigenfunctions).__name__}"
            )
        if eigenfunctions.networks is None:
            raise ValueError("eigenfunctions must be fitted (call .fit(x)) before building a kernel")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        super().__init__(**kwargs)
        self.eigenfunctions = copy.deepcopy(eigenfunctions).requires_grad_(False)
        self.chunk_size = chunk_size

    @property
    def num_outputs(self) -> int:
        """:math:`k`, the rank."""
        return self.eigenfunctions.num_eigenfunctions

    @property
    def eigenvalues(self) -> Tensor:
        r"""``(k,)`` the :math:`\lambda_j`."""
        return self.eigenfunctions.eigenvalues

    def features(self, x: Tensor) -> Tensor:
        r"""``(..., n, k)`` the features :math:`\sqrt{\lambda_j}\,\psi_j(x)` of ``(..., n, d)`` inputs."""
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a (..., n, d) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        if self.active_dims is not None:
            x = x.index_select(-1, self.active_dims.to(x.device))
        flat = x.reshape(-1, x.shape[-1])
        chunks = [
            self.eigenfunctions(flat[start : start + self.chunk_size])
            for start in range(0, flat.shape[0], self.chunk_size)
        ]
        psi = torch.cat(chunks) if chunks else flat.new_zeros(0, self.num_outputs)
        # eigenvalues of a PSD kernel: Ritz values are clamped at zero already; moving averages
        # (ritz_points=0) can round below it
        scale = self.eigenvalues.clamp_min(0).sqrt().to(psi)
        return (psi * scale).reshape(*x.shape[:-1], self.num_outputs)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError("NeuralEFKernel does not support last_dim_is_batch")
        return _feature_product(self.features, x1, x2, diag)
