r"""BoTorch pathwise feature maps for the network kernels.

Registers :func:`gen_kernel_features` with BoTorch's ``GenKernelFeatures`` dispatcher for the
network kernels and :class:`~gp_ntk.approximations.RandomFeatureKernel` (on import of
:mod:`gp_ntk.bo`), so ``draw_matheron_paths``, ``get_optimal_samples`` and pathwise Thompson
sampling work with network kernels (inside ``ScaleKernel`` and
:class:`~gp_ntk.kernels.UnitVarianceKernel` too, so with :func:`~gp_ntk.bo.make_bo_model`'s default). The features are those of
:mod:`gp_ntk.approximations`.
"""

from __future__ import annotations

import torch
from botorch.sampling.pathwise.features.generators import GenKernelFeatures
from botorch.sampling.pathwise.features.maps import FeatureMap
from botorch.sampling.pathwise.utils import FeatureSelector
from gpytorch.kernels import Kernel
from torch import Tensor, nn

from ..approximations import RandomFeatureKernel
from ..kernels import ArcCosineKernel, ErfKernel, UnitVarianceKernel
from ..kernels.nngp import DeepNetworkKernel

__all__ = ["RandomFeatureMap", "gen_kernel_features"]


class RandomFeatureMap(FeatureMap):
    """A BoTorch pathwise feature map from a :class:`~gp_ntk.approximations.RandomFeatureKernel`'s features."""

    def __init__(self, kernel: RandomFeatureKernel, num_inputs: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.input_transform = None
        if kernel.active_dims is not None:
            self.input_transform = FeatureSelector(indices=kernel.active_dims)
            num_inputs = len(kernel.active_dims)
        if kernel.feature_map is None:
            active = kernel.base_kernel.active_dims
            kernel._draw(num_inputs if active is None else len(active))
        # BoTorch's ScaleKernel generator chains its output scale with this transform
        self.output_transform = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.kernel.features(x)

    @property
    def num_outputs(self) -> int:
        return self.kernel.num_outputs

    @property
    def batch_shape(self) -> torch.Size:
        return self.kernel.batch_shape


def gen_kernel_features(kernel: Kernel, num_inputs: int, num_outputs: int, **kwargs) -> RandomFeatureMap:
    """BoTorch feature-map generator: ``num_outputs`` random features of a network kernel, or a
    :class:`~gp_ntk.approximations.RandomFeatureKernel`'s own features (then the prior paths are exact for that kernel)."""
    if isinstance(kernel, RandomFeatureKernel):
        return RandomFeatureMap(kernel, num_inputs)
    # RandomFeatureKernel.features applies the base kernel's active_dims itself
    return RandomFeatureMap(RandomFeatureKernel(kernel, num_features=num_outputs), num_inputs)


def _generate(kernel: Kernel, *, num_inputs: int, num_outputs: int, **kwargs) -> RandomFeatureMap:
    return gen_kernel_features(kernel, num_inputs, num_outputs)


for _kernel_type in (RandomFeatureKernel, DeepNetworkKernel, ArcCosineKernel, ErfKernel, UnitVarianceKernel):
    GenKernelFeatures.register(_kernel_type)(_generate)
