r"""Input transforms for dot-product kernels: the search box centred on the origin.

NNGP/NTK kernels see inputs through angles at the origin. BoTorch's ``Normalize`` puts every
input in :math:`[0, 1]^d`, a single orthant, where all pairwise angles are small and the kernel
nearly constant (``docs/kernels.md#11-pitfall-centre-your-inputs``);
:class:`~gp_ntk.bo.CenteredNormalize` maps the box onto :math:`[-1, 1]^d` instead.

It derives from BoTorch's ``AffineInputTransform``, the base of ``Normalize``, rather than from
``Normalize`` itself: ``Normalize(center=0)`` maps onto :math:`[-1/2, 1/2]^d` (unit range, not
unit half-range), reports its ``bounds`` from that range, and leaves a constant learnt feature
uncentred, so every method it has would need overriding.
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.models.transforms.input import AffineInputTransform
from torch import Tensor

from ..validation import check_bounds, check_int, check_number

__all__ = ["CenteredNormalize", "check_bounds"]


class CenteredNormalize(AffineInputTransform):
    r"""Affine input transform of the box ``bounds`` onto :math:`[-1, 1]^d`:

    .. math::
        x \mapsto \frac{x - (l + u)/2}{(u - l)/2}.

    The centre of the search box becomes the origin, which is what a dot-product kernel needs:
    its value depends on the angle between inputs seen from the origin, so inputs confined to
    one orthant (BoTorch's ``Normalize`` onto :math:`[0, 1]^d`) look nearly parallel and the
    kernel nearly constant. Without ``bounds`` the box is learnt from the training inputs
    (their per-feature minimum and maximum), like ``Normalize``'s.

    Args:
        d: number of input features.
        bounds: ``2 x d`` tensor of lower and upper bounds, or ``None`` to learn them.
        indices, batch_shape, transform_on_train, transform_on_eval, transform_on_fantasize, reverse:
            as for BoTorch's ``Normalize``.
        learn_bounds: learn the box from the training inputs; default ``bounds is None``.
        min_range: learnt feature ranges below this are not scaled (constant features).
    """

    def __init__(
        self,
        d: int,
        bounds: Tensor | None = None,
        indices: list[int] | Tensor | None = None,
        batch_shape: torch.Size = torch.Size(),  # noqa: B008
        transform_on_train: bool = True,
        transform_on_eval: bool = True,
        transform_on_fantasize: bool = True,
        reverse: bool = False,
        learn_bounds: bool | None = None,
        min_range: float = 1e-8,
    ) -> None:
        check_int(d, "d")
        check_number(min_range, "min_range", minimum=0)
        self.learn_coefficients = bounds is None if learn_bounds is None else bool(learn_bounds)
        width = d if indices is None else len(indices)
        if bounds is not None:
            bounds = check_bounds(bounds, d if indices is None else None)
            if indices is not None and bounds.shape[-1] == d:
                bounds = bounds[..., indices]
            if bounds.shape[-1] != width:
                raise ValueError(f"bounds must have {width} columns, got {bounds.shape[-1]}")
            offset = 0.5 * (bounds[..., 0:1, :] + bounds[..., 1:2, :])
            coefficient = 0.5 * (bounds[..., 1:2, :] - bounds[..., 0:1, :])
        else:
            offset = torch.zeros(*batch_shape, 1, width)
            coefficient = torch.ones(*batch_shape, 1, width)
        super().__init__(
            d=d,
            coefficient=coefficient,
            offset=offset,
            indices=indices,
            batch_shape=batch_shape,
            transform_on_train=transform_on_train,
            transform_on_eval=transform_on_eval,
            transform_on_fantasize=transform_on_fantasize,
            reverse=reverse,
        )
        self.min_range = min_range

    @property
    def bounds(self) -> Tensor:
        """The ``2 x d`` box mapped onto :math:`[-1, 1]^d`."""
        return torch.cat([self.offset - self.coefficient, self.offset + self.coefficient], dim=-2)

    @property
    def learn_bounds(self) -> bool:
        return self.learn_coefficients

    def _update_coefficients(self, X: Tensor) -> None:
        bad = ~torch.isfinite(X).reshape(-1, X.shape[-1]).all(-1)
        if bool(bad.any()):
            # amin/amax would turn one NaN into NaN bounds and every transformed input into NaN
            raise ValueError(
                f"CenteredNormalize cannot learn its bounds from inputs with NaN or infinite entries "
                f"({int(bad.sum())} row(s)); drop those rows or pass bounds"
            )
        batch_ndim = min(len(self.batch_shape), X.ndim - 2)
        reduce_dims = (*range(X.ndim - batch_ndim - 2), X.ndim - 2)
        lower = torch.amin(X, dim=reduce_dims).unsqueeze(-2)
        upper = torch.amax(X, dim=reduce_dims).unsqueeze(-2)
        constant = (upper - lower) < self.min_range
        # a constant feature is only shifted to 0, never divided by a zero range
        self._coefficient = torch.where(constant, torch.ones_like(lower), 0.5 * (upper - lower))
        self._offset = 0.5 * (lower + upper)

    def get_init_args(self) -> dict[str, Any]:
        return {
            "d": self._d,
            "bounds": self.bounds,
            "indices": getattr(self, "indices", None),
            "batch_shape": self.batch_shape,
            "transform_on_train": self.transform_on_train,
            "transform_on_eval": self.transform_on_eval,
            "transform_on_fantasize": self.transform_on_fantasize,
            "reverse": self.reverse,
            "learn_bounds": self.learn_bounds,
            "min_range": self.min_range,
        }
