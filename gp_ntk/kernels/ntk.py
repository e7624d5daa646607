r"""Neural tangent kernel of a deep fully-connected network (Jacot et al., 2018; Arora et al., 2019)."""

from __future__ import annotations

from .nngp import DeepNetworkKernel

__all__ = ["NTKKernel"]


class NTKKernel(DeepNetworkKernel):
    r"""Neural tangent kernel of an infinitely wide fully-connected network (NTK parameterization).

    ``NTKKernel(depth=L)`` is :math:`\Theta^{(L+1)}` of the network that neural-tangents
    writes as ``stax.serial(*[Dense(w, W_std, b_std), act] * L, Dense(1, W_std, b_std))``,
    with ``weight_variance = W_std**2``, ``bias_variance = b_std**2`` (0: no biases), the
    first layer dividing :math:`x^\top y` by the input dimension. It takes the arguments of
    :class:`~gp_ntk.NNGPKernel` and follows the recursion of
    :class:`~gp_ntk.kernels.nngp.DeepNetworkKernel`:

    .. math::
        \Theta^{(l+1)}(x, y) = \Sigma^{(l+1)}(x, y)
            + \sigma_{w,l+1}^2\,\mathbb E[\phi'(u)\phi'(v)]\,\Theta^{(l)}(x, y),
        \qquad \Theta^{(1)} = \Sigma^{(1)}.

    For a ReLU network with one hidden layer, no bias and ``weight_variance = 1``, this is
    :math:`\tfrac{\|x\|\|y\|}{2d}\,\kappa(u)` with
    :math:`\kappa(u) = \big(2u(\pi - \arccos u) + \sqrt{1-u^2}\big)/\pi` and :math:`u = \cos\theta`.

    ``parameterization="standard", width=n`` gives the NTK of the same network in the standard
    parameterization (neural-tangents' ``Dense(n, W_std, b_std, parameterization="standard")``
    hidden layers, weights :math:`\sim\mathcal N(0, \sigma_w^2/n_{in})`, biases
    :math:`\sim\mathcal N(0, \sigma_b^2)`), whose parameter gradients are not rescaled:

    .. math::
        \Theta^{(1)} = x^\top y + 1_b,\qquad
        \Theta^{(l+1)} = n\,\mathbb E[\phi(u)\phi(v)] + 1_b + \sigma_{w}^2\,\mathbb E[\phi'(u)\phi'(v)]\,\Theta^{(l)},

    :math:`1_b = 1` with biases and 0 without. It grows linearly in the width, as the
    standard-parameterization NTK does; the NNGP does not depend on the parameterization.

    :meth:`~gp_ntk.kernels.base.VarianceKernel.nngp_and_ntk` returns both kernels from one pass.

    Example:
        >>> import torch, gpytorch, gp_ntk
        >>> x = torch.randn(10, 3)
        >>> k = gp_ntk.NTKKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)
        >>> covar = gpytorch.kernels.ScaleKernel(k)
        >>> covar(x).to_dense().shape
        torch.Size([10, 10])

    .. [Jacot2018] A. Jacot, F. Gabriel, C. Hongler. Neural Tangent Kernel: Convergence and
        Generalization in Neural Networks. NeurIPS 2018.
    .. [Arora2019] S. Arora, S. Du, W. Hu, Z. Li, R. Salakhutdinov, R. Wang. On Exact
        Computation with an Infinitely Wide Neural Net. NeurIPS 2019.
    """

    _returns_ntk = True
