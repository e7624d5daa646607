r"""Smooth activations with closed-form duals beyond neural-tangents' set: GELU."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops import gram_determinant
from .base import _TWO_PI, Activation, _asin, register_activation


@register_activation("gelu")
@dataclass(frozen=True)
class GELU(Activation):
    r""":math:`\phi(u) = u\,\Phi(u)` with :math:`\Phi` the standard normal CDF (exact GELU,
    neural-tangents' ``Gelu(approximate=False)``).

    With :math:`k = \sqrt{(1+\Sigma_{xx})(1+\Sigma_{yy})}` and :math:`\Delta = k^2 - \Sigma_{xy}^2`:

    .. math::
        \mathbb E[\phi'\phi'] = \frac14 + \frac{1}{2\pi}\Big[\arcsin\frac{\Sigma_{xy}}{k}
            + \frac{\Sigma_{xy}}{\sqrt\Delta}\Big(\frac{1}{1+\Sigma_{xx}} + \frac{1}{1+\Sigma_{yy}}\Big)
            + \frac{\Sigma_{xy}}{\Delta^{3/2}}\Big]

    and :math:`\mathbb E[\phi\phi]` is its integral in :math:`\Sigma_{xy}` from
    :math:`\mathbb E[\phi(u)]\mathbb E[\phi(v)] = \Sigma_{xx}\Sigma_{yy}/(2\pi k)` (Price's theorem):

    .. math::
        \mathbb E[\phi\phi] = \frac{\Sigma_{xx}\Sigma_{yy}}{2\pi k} + \frac{\Sigma_{xy}}{4}
            + \frac{1}{2\pi}\Big[\Sigma_{xy}\arcsin\frac{\Sigma_{xy}}{k}
            - (k - \sqrt\Delta)\Big(1 - \frac{1}{1+\Sigma_{xx}} - \frac{1}{1+\Sigma_{yy}}\Big)
            + \frac1{\sqrt\Delta} - \frac1k\Big].
    """

    def stax_layer(self):
        return "Gelu", {"approximate": False}

    def __call__(self, x: Tensor) -> Tensor:
        return torch.nn.functional.gelu(x)

    def duals(self, var1, cov, var2, derivative=True):
        a1, b1 = 1.0 + var1, 1.0 + var2
        k = torch.sqrt(a1) * torch.sqrt(b1)
        root_delta = torch.sqrt(1.0 + (var1 + var2) + gram_determinant(var1, cov, var2))
        asin = _asin(torch.clamp(cov / k, -1.0, 1.0))
        inv_sum = 1.0 / a1 + 1.0 / b1
        # k - sqrt(Delta) = cov^2 / (k + sqrt(Delta)) avoids cancellation for small cov.
        k_minus_root = cov * (cov / (k + root_delta))
        q = (
            (var1 / torch.sqrt(a1)) * (var2 / torch.sqrt(b1)) / _TWO_PI
            + 0.25 * cov
            + (cov * asin - k_minus_root * (1.0 - inv_sum) + k_minus_root / k / root_delta) / _TWO_PI
        )
        if not derivative:
            return q, None
        ratio = cov / root_delta
        q_dot = 0.25 + (asin + ratio * inv_sum + ratio / root_delta / root_delta) / _TWO_PI
        return q, q_dot

    def dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2, derivative=False)[0]

    def derivative_dual(self, var1, cov, var2):
        return self.duals(var1, cov, var2)[1]
