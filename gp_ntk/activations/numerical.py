r"""Any elementwise activation, its duals by Gauss-Hermite quadrature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..ops import masked_sqrt
from .base import CorrelationActivation, _integer, _set, register_activation

# --------------------------------------------------------------------------- any activation


def _elementwise_derivative(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """phi'(x) by autograd; stays differentiable in x when x carries a graph."""
    with torch.enable_grad():
        track = x.requires_grad
        x_in = x if track else x.detach().requires_grad_(True)
        y = fn(x_in)
        if not y.requires_grad:  # piecewise constant through non-differentiable ops: 0 a.e.
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(y, x_in, torch.ones_like(y), create_graph=track, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


_PROBE_SIZE = 24


def _probe_outputs(fn: Callable[[Tensor], Tensor], dtype: torch.dtype) -> tuple[Tensor, ...]:
    """``fn`` on a 4 x 6 grid of values in [-3, 3], on the same values permuted into a 3 x 8
    grid, and one value at a time: an elementwise function gives the same numbers each way."""
    values = torch.linspace(-3.0, 3.0, _PROBE_SIZE, dtype=dtype)
    permutation = torch.randperm(_PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    grid = fn(values.reshape(4, 6))
    if not isinstance(grid, Tensor) or grid.shape != (4, 6):
        shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(
            f"Numerical: fn must be elementwise, mapping a tensor to one of the same shape; it maps a "
            f"(4, 6) tensor to {shape}"
        )
    permuted = fn(values[permutation].reshape(3, 8))
    singles = torch.stack([torch.as_tensor(fn(v.reshape(1))).reshape(()) for v in values])
    return values, grid.reshape(-1), permuted.reshape(-1), singles.to(grid.dtype), permutation


def _check_elementwise(fn: Callable[[Tensor], Tensor]) -> None:
    """Refuse ``fn`` unless it is a finite elementwise function (what the quadrature assumes)."""
    try:
        values, grid, permuted, singles, permutation = _probe_outputs(fn, torch.float64)
    except ValueError:
        raise
    except Exception as first_error:  # e.g. float32-only modules: try their dtype
        try:
            values, grid, permuted, singles, permutation = _probe_outputs(fn, torch.float32)
        except ValueError:
            raise
        except Exception:
            raise ValueError(
                f"Numerical: fn could not be evaluated on a tensor ({type(first_error).__name__}: {first_error})"
            ) from first_error
    grid, permuted, singles = grid.to(values.dtype), permuted.to(values.dtype), singles.to(values.dtype)
    bad = ~torch.isfinite(grid)
    if bad.any():
        x = float(values[bad.nonzero()[0, 0]])
        raise ValueError(
            f"Numerical: fn must be finite on the whole real line (the duals integrate it against a "
            f"Gaussian); fn({x:.4g}) = {float(grid[bad][0])}"
        )
    tolerance = dict(
        rtol=1e-6 if values.dtype == torch.float32 else 1e-10, atol=1e-6 * (1.0 + float(grid.abs().max()))
    )
    if not (
        torch.allclose(permuted, grid[permutation], **tolerance)
        and torch.allclose(singles, grid, **tolerance)
    ):
        raise ValueError(
            "Numerical: fn must be elementwise (each output entry a function of the same input entry "
            "alone); its values change when the other entries of the input change (e.g. x - x.mean(), "
            "a softmax or a normalisation)"
        )


@register_activation()
@dataclass(frozen=True)
class Numerical(CorrelationActivation):
    r"""Any elementwise torch function, its duals by Gauss–Hermite quadrature.

    .. math::
        \mathbb E[\phi(u)\phi(v)] \approx \sum_{k,l} w_k w_l\,
            \phi\big(\sqrt{\Sigma_{xx}}\,z_k\big)\,
            \phi\big(\sqrt{\Sigma_{yy}}\,(c z_k + \sqrt{1-c^2}\,z_l)\big)

    on the ``degree``-point probabilists' Gauss–Hermite rule :math:`(z_k, w_k)` (weights
    summing to 1, built once at construction), :math:`c` the correlation; :math:`\phi'` comes
    from autograd and goes through the same rule, averaged over both orders of :math:`(u, v)`.
    The rule is exact for polynomials of degree :math:`2\,\text{degree}-1` in each variable, so
    smooth activations converge fast; kinks (ReLU-like) converge algebraically. Measured
    accuracies are in ``docs/kernels.md``.

    ``fn`` must be elementwise, finite on the real line and picklable (a torch function such as
    ``torch.tanh`` or a module-level function; not a lambda) for the kernel to pickle. The
    constructor checks the first two on a probe (a grid of values, the same values permuted,
    and one at a time) and refuses e.g. ``lambda x: x - x.mean()``, a softmax or ``torch.log``.
    Cost: ``2 * degree**2`` evaluations of ``fn`` on an n x m tensor per layer and dual.
    """

    fn: Callable[[Tensor], Tensor] = torch.tanh
    degree: int = 32
    _nodes: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _weights: tuple[float, ...] = field(init=False, repr=False, compare=False)

    exact: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValueError(f"Numerical: fn must be a callable elementwise function, got {self.fn!r}")
        # numpy's Hermite rule overflows to NaN weights from degree ~370
        degree = _integer("Numerical", "degree", self.degree, 2, 256)
        _check_elementwise(self.fn)
        nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
        weights = weights / weights.sum()
        _set(self, degree=degree, _nodes=tuple(nodes.tolist()), _weights=tuple(weights.tolist()))

    @classmethod
    def examples(cls):
        return (cls(torch.tanh, degree=32),)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        return f"Numerical(fn={name}, degree={self.degree})"

    def _quadrature(self, corr, std1, std2, transform) -> Tensor:
        # u and v play different roles in the product rule, so its error is not symmetric in
        # (std1, std2); averaging both orders makes k(X, X) exactly symmetric and every
        # cross-covariance block agree with the joint matrix.
        forward = self._ordered_quadrature(corr, std1, std2, transform)
        return 0.5 * (forward + self._ordered_quadrature(corr, std2, std1, transform))

    def _ordered_quadrature(self, c, sd1, sd2, transform) -> Tensor:
        # The sum over the symmetric nodes z_l is even in s, hence smooth in c at |c| = 1;
        # the masked root keeps autograd from forming inf * 0 there.
        s = masked_sqrt(1.0 - c * c)
        total = torch.zeros_like(c)
        for zk, wk in zip(self._nodes, self._weights):
            left = transform(sd1 * zk)
            inner = torch.zeros_like(c)
            for zl, wl in zip(self._nodes, self._weights):
                inner = inner + wl * transform(sd2 * (c * zk + s * zl))
            total = total + wk * left * inner
        return total

    def _derivative(self, x: Tensor) -> Tensor:
        return _elementwise_derivative(self.fn, x)

    def correlation_duals(self, corr, std1, std2, derivative=True):
        q = self._quadrature(corr, std1, std2, self.fn)
        return q, (self._quadrature(corr, std1, std2, self._derivative) if derivative else None)

    def _variance(self, var, transform) -> Tensor:
        sd = masked_sqrt(var)
        total = torch.zeros_like(var)
        for z, w in zip(self._nodes, self._weights):
            total = total + w * transform(sd * z) ** 2
        return total

    def variance(self, var):
        return self._variance(var, self.fn)

    def derivative_variance(self, var):
        return self._variance(var, self._derivative)
