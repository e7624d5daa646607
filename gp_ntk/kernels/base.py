"""Shared machinery of the gp_ntk kernels: variance hyperparameters and input checks."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel
from gpytorch.priors import Prior
from torch import Tensor

from .. import settings
from ..engine import BlockedKernelLinearOperator, DenseKernel, Side, run_block
from ..ops import broadcast_shape
from ..recursion import (
    block_recursion,
    first_layer_covariance,
    first_layer_variances,
    fused_block_coefficients,
    layer_recursion,
    linear_covariances,
    needs_identical_points,
    output_variances,
    point_statistics,
    shares_variances,
    zero_variances,
)
from ._contract import (
    STRUCTURE_KEY,
    as_initial_values,
    as_integer,
    broadcasts_to,
    check_state_dict,
    decode_structure,
    encode_structure,
    exact_values,
    get_variance,
    same_points,
    set_variance,
    warn_if_uncentred,
)
from ._unit_block import unit_variance_block

__all__ = ["VarianceKernel", "check_inputs"]


class _KernelFunctions:
    """What :class:`~gp_ntk.engine.lazy.BlockedKernelLinearOperator` evaluates of a kernel.

    Called like a ``covar_func`` (one piece, or the diagonal), and with :meth:`side` and
    :meth:`block` for the blocked products. Reads the structure from the kernel and every
    hyperparameter from its arguments.
    """

    def __init__(self, kernel: VarianceKernel) -> None:
        self.kernel = kernel

    def __call__(self, x1: Tensor, x2: Tensor, diag: bool = False, **variances: Tensor) -> Tensor:
        return self.kernel._checked_output(
            self.kernel._evaluate(x1, x2, diag, False, **variances), (x1, x2, variances)
        )

    def side(self, x: Tensor, **variances: Tensor) -> Side:
        return self.kernel._side(x, variances)

    def block(self, side1: Side, side2: Side, compiled: bool, **variances: Tensor) -> Tensor:
        return self.kernel._checked_output(
            run_block(self.kernel, side1, side2, "kernel", compiled, variances)[0],
            (side1.points, side2.points, variances),
        )


def _features_as_batch(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    """GPyTorch's ``last_dim_is_batch``: each feature a batch of one-dimensional inputs.

    ``x1 is x2`` is kept, so that ``k(X, X)`` still takes the symmetric path.
    """
    same = x1 is x2
    x1 = x1.transpose(-1, -2).unsqueeze(-1)
    return x1, (x1 if same else x2.transpose(-1, -2).unsqueeze(-1))


#: rows of a bias-free homogeneous kernel's input are rescaled when the largest magnitude of
#: some row lies outside [2**-_RESCALE_BITS, 2**_RESCALE_BITS] (where nothing can under- or
#: overflow, the inputs are taken as they are)
_RESCALE_BITS = 16


def _row_exponents(x: Tensor) -> Tensor:
    """``e`` per row with ``max |x_i|`` in ``[2**(e-1), 2**e)`` (0 for a zero row), ``(..., n)``."""
    return torch.frexp(x.detach().abs().amax(-1)).exponent.to(torch.int64)


def _times_power_of_two(values: Tensor, exponents: Tensor) -> Tensor:
    """``values * 2**exponents``, exact unless the result itself under- or overflows.

    ``exponents`` (integers, broadcasting against ``values``) may exceed the dtype's exponent
    range: the factor is applied in up to three steps of the same sign, each representable,
    so an intermediate never leaves the range between ``values`` and the result.
    """
    step = int(math.log2(torch.finfo(values.dtype).max)) - 1
    exponents = exponents.clamp(-3 * step, 3 * step)
    for _ in range(3):
        part = exponents.clamp(-step, step)
        values = values * torch.ldexp(torch.ones_like(part, dtype=values.dtype), part)
        exponents = exponents - part
    return values


def _same_values(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors hold the same values (shape, dtype and device included)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def _all_finite(values: Tensor) -> bool:
    # A NaN or inf anywhere makes the sum non-finite: one cheap reduction instead of an
    # elementwise test (which costs as much as a layer). Only a sum that overflows from
    # finite values needs the elementwise test.
    with torch.no_grad():
        return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


def check_inputs(
    x1: Tensor,
    x2: Tensor,
    ard_num_dims: int | None = None,
    check_values: bool = True,
    diag: bool = False,
    batch_shape: torch.Size | None = None,
    last_dim_is_batch: bool = False,
) -> None:
    """Raise ``ValueError`` for inputs a kernel cannot take; nothing is modified.

    Shapes: ``(..., n, d)`` floating-point tensors of one dtype and width, whose batch
    dimensions broadcast with each other and with the kernel's ``batch_shape`` (the features
    count as a batch dimension with ``last_dim_is_batch``); ``diag=True`` pairs rows, so
    both need the same number. ``check_values`` adds the ARD width and, while
    :class:`gp_ntk.settings.check_finite` is on, a scan for NaN/inf entries.
    """
    for name, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(
                f"{name} must have shape (..., n, d) with at least 2 dimensions, got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x1.dtype != x2.dtype:
        raise ValueError(f"x1 and x2 must have the same dtype, got x1: {x1.dtype} and x2: {x2.dtype}")
    if x1.shape[-1] != x2.shape[-1]:
        raise ValueError(
            f"x1 and x2 must have the same number of features (last dimension), "
            f"got x1: {x1.shape[-1]} and x2: {x2.shape[-1]}"
        )
    if diag and x1.shape[-2] != x2.shape[-2]:
        raise ValueError(
            f"diag=True pairs the rows of x1 and x2, so they need the same number of rows, "
            f"got x1: {x1.shape[-2]} and x2: {x2.shape[-2]}"
        )
    batch1, batch2 = x1.shape[:-2], x2.shape[:-2]
    if last_dim_is_batch:
        batch1, batch2 = batch1 + x1.shape[-1:], batch2 + x2.shape[-1:]
    try:
        batch = batch1 if batch1 == batch2 else broadcast_shape(batch1, batch2)
    except RuntimeError:
        raise ValueError(
            f"the batch shapes of x1 {tuple(batch1)} and x2 {tuple(batch2)} do not broadcast "
            f"(inputs have shape (*batch, n, d))"
        ) from None
    if batch_shape is not None and batch_shape != batch and len(batch_shape):
        try:
            broadcast_shape(batch, batch_shape)
        except RuntimeError:
            raise ValueError(
                f"the inputs' batch shape {tuple(batch)} does not broadcast with the kernel's "
                f"batch_shape {tuple(batch_shape)}"
            ) from None
    if not check_values or torch.compiler.is_compiling():
        # compiled block evaluation: the operator checked the whole inputs before
        return
    if ard_num_dims is not None and x1.shape[-1] != ard_num_dims:
        raise ValueError(
            f"inputs must have ard_num_dims={ard_num_dims} features (after active_dims), got {x1.shape[-1]}"
        )
    if settings.check_finite.on():
        for name, x in (("x1", x1),) if x2 is x1 else (("x1", x1), ("x2", x2)):
            if _all_finite(x):
                continue
            bad = ~torch.isfinite(x)
            if bad.any():
                rows = int(bad.any(-1).sum())
                raise ValueError(
                    f"{name} contains NaN or infinite values in {rows} row(s); clean the inputs, "
                    "or use gp_ntk.settings.check_finite(False) to let them propagate to the "
                    "matching rows/columns of the kernel matrix"
                )


class VarianceKernel(Kernel):
    """A kernel whose hyperparameters are layer weight and bias variances.

    Parameters are registered with leading batch dimensions, as GPyTorch expects for indexing
    and ``expand_batch``:

    * ``raw_weight_variance``: ``(*batch_shape, num_weight_variances)``, absent when a
      single-layer kernel has ARD (its only weights are then the per-feature ones);
    * ``raw_bias_variance``: ``(*batch_shape, num_bias_variances)``, absent when biases are off;
    * ``raw_input_weight_variance``: ``(*batch_shape, 1, ard_num_dims)`` with ARD.
    """

    has_lengthscale = False

    @property
    def batch_shape(self) -> torch.Size:
        # These kernels hold no sub-kernels, so their batch shape is their own; GPyTorch's
        # property walks every submodule to find sub-kernels, at a cost comparable to a small
        # block's first layer, on every call
        return self._batch_shape

    @batch_shape.setter
    def batch_shape(self, value: torch.Size) -> None:
        self._batch_shape = value

    def __init__(
        self,
        weight_variance: float | Sequence[float],
        bias_variance: float | Sequence[float],
        num_weight_variances: int,
        num_bias_variances: int,
        ard_num_dims: int | None = None,
        weight_variance_prior: Prior | None = None,
        bias_variance_prior: Prior | None = None,
        weight_variance_constraint: Interval | None = None,
        bias_variance_constraint: Interval | None = None,
        **kwargs,
    ) -> None:
        if ard_num_dims is not None:
            ard_num_dims = as_integer(ard_num_dims, "ard_num_dims must be a positive integer or None")
        active_dims = kwargs.get("active_dims")
        if active_dims is not None:
            try:
                indices = torch.as_tensor(active_dims)
            except (TypeError, ValueError, RuntimeError):
                indices = None
            if (
                indices is None
                or indices.dim() > 1
                or indices.is_floating_point()
                or indices.is_complex()
                or bool((indices < 0).any())
            ):
                raise ValueError(
                    f"active_dims must be a sequence of non-negative feature indices, got {active_dims!r}"
                )
        super().__init__(ard_num_dims=ard_num_dims, **kwargs)
        # the exact (float64) value last set for each raw parameter, see _apply
        self._exact_variances: dict[str, tuple[Tensor, Tensor]] = {}
        weights = as_initial_values(weight_variance, "weight_variance")
        biases = as_initial_values(bias_variance, "bias_variance")
        if any(v <= 0 for v in weights):
            raise ValueError(f"weight_variance must be positive, got {weights}")
        if any(v < 0 for v in biases):
            raise ValueError(f"bias_variance must be non-negative (0 disables biases), got {biases}")
        self.has_bias = any(v > 0 for v in biases)
        if self.has_bias and any(v == 0 for v in biases):
            raise ValueError(
                f"bias_variance must be all positive or 0 (no biases); got {biases}, which mixes both"
            )
        self.weight_variance_constraint = weight_variance_constraint or Positive()
        if num_weight_variances > 0:
            layer_weights = self._spread(weights, num_weight_variances, "weight_variance")
            self.register_parameter(
                "raw_weight_variance",
                torch.nn.Parameter(torch.zeros(*self.batch_shape, num_weight_variances)),
            )
            self.register_constraint("raw_weight_variance", self.weight_variance_constraint)
            self._set_weight_variance(torch.tensor(layer_weights, dtype=torch.float64))
            if weight_variance_prior is not None:
                self._register_variance_prior(weight_variance_prior, "weight_variance")
        if ard_num_dims is not None:
            # single-layer kernels (num_weight_variances == 0) take per-feature initial values
            ard_weights = weights if num_weight_variances == 0 else weights[:1]
            ard_weights = self._spread(ard_weights, ard_num_dims, "weight_variance (per input feature)")
            self.register_parameter(
                "raw_input_weight_variance",
                torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, ard_num_dims)),
            )
            self.register_constraint(
                "raw_input_weight_variance", copy.deepcopy(self.weight_variance_constraint)
            )
            self._set_input_weight_variance(torch.tensor(ard_weights, dtype=torch.float64))
            if weight_variance_prior is not None:
                self._register_variance_prior(weight_variance_prior, "input_weight_variance")

        if self.has_bias:
            biases = self._spread(biases, num_bias_variances, "bias_variance")
            self.bias_variance_constraint = bias_variance_constraint or Positive()
            self.register_parameter(
                "raw_bias_variance",
                torch.nn.Parameter(torch.zeros(*self.batch_shape, num_bias_variances)),
            )
            self.register_constraint("raw_bias_variance", self.bias_variance_constraint)
            self._set_bias_variance(torch.tensor(biases, dtype=torch.float64))
            if bias_variance_prior is not None:
                self._register_variance_prior(bias_variance_prior, "bias_variance")
        elif bias_variance_prior is not None:
            raise ValueError("bias_variance_prior needs biases: pass a positive bias_variance")

    @staticmethod
    def _spread(values: list[float], count: int, name: str) -> list[float]:
        # the subclasses have refused wrong counts with their reasons; this is the safety net
        if len(values) == 1:
            return values * count
        if len(values) != count:
            raise ValueError(f"{name}: got {len(values)} values; pass one number or {count} values")
        return values

    def _register_variance_prior(self, prior: Prior, name: str) -> None:
        if not isinstance(prior, Prior):
            raise ValueError(f"{name}_prior must be a gpytorch.priors.Prior, got {type(prior).__name__}")
        # partials of module-level functions, not lambdas: a kernel with priors must pickle
        self.register_prior(
            f"{name}_prior",
            prior,
            functools.partial(get_variance, name),
            functools.partial(set_variance, name),
        )

    # ------------------------------------------------------------------ properties

    @property
    def weight_variance(self) -> Tensor | None:
        if not hasattr(self, "raw_weight_variance"):
            return None
        return self.raw_weight_variance_constraint.transform(self.raw_weight_variance)

    @weight_variance.setter
    def weight_variance(self, value: Tensor | float) -> None:
        self._set_weight_variance(value)

    @property
    def bias_variance(self) -> Tensor | None:
        if not self.has_bias:
            return None
        return self.raw_bias_variance_constraint.transform(self.raw_bias_variance)

    @bias_variance.setter
    def bias_variance(self, value: Tensor | float) -> None:
        self._set_bias_variance(value)

    @property
    def input_weight_variance(self) -> Tensor | None:
        if self.ard_num_dims is None:
            return None
        return self.raw_input_weight_variance_constraint.transform(self.raw_input_weight_variance)

    @input_weight_variance.setter
    def input_weight_variance(self, value: Tensor | float) -> None:
        self._set_input_weight_variance(value)

    def _count_hint(self, name: str) -> str:
        """What the last dimension of variance ``name`` holds, for error messages."""
        if name == "input_weight_variance":
            return f"ard_num_dims = {self.ard_num_dims} values, one per input feature"
        return "1 value"

    def _set_positive(self, raw_name: str, value: Tensor | float, name: str) -> None:
        """Write a constrained value; refuse (leaving the parameter as it was) a bad one.

        The value must broadcast to the parameter's shape ``(*batch_shape, k)`` (``(*batch_shape,
        1, d)`` for ``input_weight_variance``) as torch broadcasting does, trailing dimensions
        aligned: one number, ``k`` values for every batch member, or the full shape.
        """
        raw = getattr(self, raw_name)
        exact = exact_values(value)
        if not broadcasts_to(exact.shape, raw.shape):
            raise ValueError(
                f"{name}: a value of shape {tuple(exact.shape)} does not broadcast to the parameter's shape "
                f"{tuple(raw.shape)} (batch_shape {tuple(self.batch_shape)}, then {self._count_hint(name)}); "
                f"pass one number{'' if raw.shape[-1] == 1 else f', {raw.shape[-1]} values'} "
                f"or a tensor of shape {tuple(raw.shape)}"
            )
        if not bool(torch.isfinite(exact).all()) or bool((exact <= 0).any()):
            raise ValueError(f"{name} must be positive and finite, got {exact.tolist()}")
        exact = exact.expand(raw.shape).clone()
        constraint = getattr(self, f"{raw_name}_constraint")
        # straight from float64 to the parameter's dtype: a Python float must not round through float32
        self.initialize(
            **{raw_name: constraint.inverse_transform(exact.to(dtype=raw.dtype, device=raw.device))}
        )
        self.__dict__.setdefault("_exact_variances", {})[raw_name] = (exact, raw.detach().clone())

    def _set_weight_variance(self, value: Tensor | float) -> None:
        if not hasattr(self, "raw_weight_variance"):
            raise ValueError("with ard_num_dims this kernel's weights are input_weight_variance")
        self._set_positive("raw_weight_variance", value, "weight_variance")

    def _set_bias_variance(self, value: Tensor | float) -> None:
        if not self.has_bias:
            raise ValueError("this kernel has no biases (it was built with bias_variance=0)")
        self._set_positive("raw_bias_variance", value, "bias_variance")

    def _set_input_weight_variance(self, value: Tensor | float) -> None:
        if self.ard_num_dims is None:
            raise ValueError("input_weight_variance exists only with ard_num_dims")
        self._set_positive("raw_input_weight_variance", value, "input_weight_variance")

    # ------------------------------------------------------------------ dtype conversions

    def _apply(self, fn, recurse: bool = True):
        r"""Module conversions (``.double()``, ``.to(...)``), keeping the values that were set exactly.

        A kernel built in float32 with ``weight_variance=0.3`` holds the float32 rounding of its
        raw (unconstrained) parameter; a plain cast to float64 would carry that rounding
        (:math:`\sim 10^{-8}` relative). Each setter remembers the float64 value it was given
        together with what it wrote; a conversion to a more precise dtype of a parameter that
        still holds exactly what was written writes the remembered value instead, as if the
        kernel had been built in that dtype. A parameter changed since (by an optimiser,
        ``load_state_dict``, ``initialize``) is just cast, and forgotten.
        """
        memory = self.__dict__.setdefault("_exact_variances", {})
        before = {name: getattr(self, name).detach().clone() for name in memory}
        result = super()._apply(fn, recurse)
        for name, (exact, written) in list(memory.items()):
            raw, old = getattr(self, name), before[name]
            if old.shape != written.shape or old.dtype != written.dtype or not torch.equal(old, written):
                del memory[name]
                continue
            if (
                raw.dtype != old.dtype
                and raw.is_floating_point()
                and torch.finfo(raw.dtype).eps < torch.finfo(old.dtype).eps
            ):
                constraint = getattr(self, f"{name}_constraint")
                with torch.no_grad():
                    raw.copy_(constraint.inverse_transform(exact.to(dtype=raw.dtype, device=raw.device)))
            memory[name] = (exact, raw.detach().clone())
        return result

    # ------------------------------------------------------------------ saved state

    def _structure(self) -> dict[str, Any]:
        """What the parameters mean: a state dict loads only into a kernel of the same structure."""
        return {"kernel": type(self).__qualname__, "ard_num_dims": self.ard_num_dims, "bias": self.has_bias}

    def get_extra_state(self) -> Tensor:
        """The kernel's structure (``_structure``), saved in ``state_dict`` as ``_extra_state``."""
        return encode_structure(self._structure())

    def set_extra_state(self, state: Any) -> None:
        # the structure is fixed by the constructor; _load_from_state_dict compared it already
        decode_structure(state)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        r"""Load a state dict, checking the whole of it before copying anything.

        With ``strict=True`` (torch's default) a state dict saved from a kernel of another
        structure (class, depth, activation, parameterization, width, per-layer, ARD, bias,
        order, number of layers; see ``_structure``), or one with missing or unexpected
        keys, is refused with a ``RuntimeError`` naming what differs; tensors of the wrong shape
        always are. A refused call changes nothing. ``strict=False`` loads what matches by name
        and shape, as in torch, and warns about a structure that differs. State dicts saved
        before the structure was stored (no ``_extra_state`` entry) load as before, their
        structure unchecked.

        Loaded as part of a model (``model.load_state_dict``), the kernel refuses another
        structure or wrong shapes before copying any of its own tensors; the model's missing or
        unexpected keys are torch's to report, after loading.
        """
        check_state_dict(
            self, self._structure(), state_dict, "", strict, getattr(self, "_load_strict_shapes", True)
        )
        self.__dict__["_state_checked"] = True
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        finally:
            self.__dict__["_state_checked"] = False

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        if not self.__dict__.get("_state_checked", False):
            # part of a parent's load_state_dict, whose strict torch does not pass down
            check_state_dict(
                self, self._structure(), state_dict, prefix, None, getattr(self, "_load_strict_shapes", True)
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        structure_key = prefix + STRUCTURE_KEY
        if structure_key not in state_dict and structure_key in missing_keys:
            missing_keys.remove(structure_key)

    # ------------------------------------------------------------------ helpers for forward

    @staticmethod
    def _layer_values(values: Tensor, count: int, like: Tensor, diag: bool) -> list[Tensor]:
        """Split ``(*batch, k)`` into ``count`` tensors that broadcast against covariances.

        The result is ``(*batch, 1, 1)`` (or ``(*batch, 1)`` with ``diag``) in ``like``'s dtype
        and device, so a float32 kernel evaluated on float64 inputs computes in float64.
        """
        values = values.to(dtype=like.dtype, device=like.device).unsqueeze(-1)
        if not diag:
            values = values.unsqueeze(-1)
        axis = -2 if diag else -3
        if values.shape[axis] > 1:
            return list(values.unbind(axis))[:count]
        # one value shared by every layer: one tensor (one autograd node), not one per layer
        return [values.squeeze(axis)] * count

    def _variances(self) -> dict[str, Tensor]:
        """The constrained hyperparameters that exist on this kernel, by name.

        :meth:`_evaluate` takes exactly these, so that a lazily evaluated operator can hand it
        detached copies and differentiate with respect to them.
        """
        variances = {}
        if hasattr(self, "raw_weight_variance"):
            variances["weight_variance"] = self.weight_variance
        if self.has_bias:
            variances["bias_variance"] = self.bias_variance
        if self.ard_num_dims is not None:
            variances["input_weight_variance"] = self.input_weight_variance
        return variances

    # number of trailing non-batch dimensions of each entry of _variances()
    _NONBATCH_DIMENSIONS = {"weight_variance": 1, "bias_variance": 1, "input_weight_variance": 2}

    # ------------------------------------------------------------------ the recursion

    #: the kernel is its recursion's NTK (else its covariance, the NNGP)
    _returns_ntk: bool = False
    #: the first layer divides x^T y by the input dimension (neural-tangents' convention)
    _divides_by_dim: bool = False

    def _recursion_layers(
        self, like: Tensor, diag: bool, variances: dict[str, Tensor]
    ) -> tuple[list[Tensor | float], list[Tensor | None]]:
        """Weight and bias variances of the affine map after each activation, shaped for
        ``(..., n, m)`` covariances (or ``(..., n)`` with ``diag``)."""
        raise NotImplementedError

    def _standard_ntk(self, x1: Tensor, x2: Tensor, diag: bool, symmetric: bool):
        """``(theta_1, widths)`` for a standard-parameterization NTK, else ``None``."""
        return None

    def _first_layer(self, like: Tensor, variances: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """``(weight, bias)`` of the first layer: ``(..., 1, d)`` or ``(..., 1, 1)``, and ``(..., 1, 1)``."""
        if self.ard_num_dims is not None:
            weight = variances["input_weight_variance"].to(like)
        else:
            weight = self._layer_values(variances["weight_variance"], 1, like, False)[0]
        if self._divides_by_dim:
            weight = weight / like.shape[-1]
        bias = self._layer_values(variances["bias_variance"], 1, like, False)[0] if self.has_bias else None
        return weight, bias

    def _homogeneity_power(self, num_layers: int) -> int | None:
        r"""``p`` with :math:`k(a x, b y) = (ab)^p k(x, y)` for :math:`a, b > 0`, or ``None``.

        A bias-free network whose activation is positively homogeneous of degree :math:`r`
        scales :math:`\Sigma^{(l)}` by :math:`(ab)^{r^{l-1}}`, and :math:`\Theta^{(l)}` alike (the
        derivative dual scales by :math:`(ab)^{r^{l-1}(r-1)}`): after ``num_layers`` activations
        both scale by :math:`(ab)^{r^L}`.
        """
        degree = getattr(self.activation, "homogeneity_degree", None)
        if self.has_bias or degree is None or degree < 0 or degree != int(degree):
            return None
        return int(degree) ** num_layers

    def _rescaled(self, x: Tensor, variances: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """``x`` with each row divided by a power of two ``2**e`` (and ``e``) where its magnitude
        could under- or overflow the first layer of a homogeneous kernel, else ``(x, None)``.

        The angle between inputs does not depend on their norms, so a bias-free homogeneous
        kernel is evaluated at rescaled inputs and multiplied back (:meth:`_rescale_output`):
        exactly, as the factors are powers of two.
        """
        if self._homogeneity_power(1) is None or x.shape[-1] == 0 or torch.compiler.is_compiling():
            return x, None
        exponents = _row_exponents(x)
        if not bool((exponents.abs() > _RESCALE_BITS).any()):
            return x, None
        return _times_power_of_two(x, -exponents.unsqueeze(-1)), exponents

    def _rescale_output(
        self,
        values: Tensor,
        exponents1: Tensor | None,
        exponents2: Tensor | None,
        num_layers: int,
        diag: bool,
    ) -> Tensor:
        """Undo :meth:`_rescaled` on a kernel value: multiply by :math:`2^{(e_1 + e_2) r^L}`."""
        if exponents1 is None and exponents2 is None:
            return values
        power = self._homogeneity_power(num_layers)
        if not power:
            return values
        if not diag:
            exponents1 = None if exponents1 is None else exponents1.unsqueeze(-1)
            exponents2 = None if exponents2 is None else exponents2.unsqueeze(-2)
        total = (
            exponents1
            if exponents2 is None
            else (exponents2 if exponents1 is None else exponents1 + exponents2)
        )
        # beyond 2**20 any non-zero exponent saturates (see _times_power_of_two)
        return _times_power_of_two(values, total * min(power, 2**20))

    def _side(self, x: Tensor, variances: dict[str, Tensor], check: bool = True) -> Side:
        """``x`` with the statistics of every layer (:func:`~gp_ntk.recursion.point_statistics`).

        ``check``: refuse variances that underflow (while :class:`gp_ntk.settings.check_finite`
        is on).
        """
        points, exponents = self._rescaled(x, variances)
        weight, bias = self._first_layer(points, variances)
        var = first_layer_variances(points, weight, bias)
        weights, biases = self._recursion_layers(var, True, variances)
        stats = point_statistics(var, self.activation, weights, biases)
        positive = False
        if check and settings.check_finite.on() and not torch.compiler.is_compiling():
            positive = self._check_underflow(points, stats, weights, biases)
        group = None
        if needs_identical_points(self.activation) and not torch.compiler.is_compiling():
            if not shares_variances(var, var, symmetric=True):
                group = object()
        # (every variance at least the smallest normal number: none is 0, known without a test)
        zeros = (False,) * (stats.shape[-1] // 3) if positive else zero_variances(stats)
        return Side(points, stats, zeros, exponents, group)

    def _check_underflow(self, points: Tensor, stats: Tensor, weights: list, biases: list) -> bool:
        """Raise ``FloatingPointError`` where a variance of a non-zero input reaches 0 or a
        subnormal number: the kernel values of such a point would be rounding noise.

        Returns whether every variance is at least the smallest normal number (the common case).
        """
        with torch.no_grad():
            tiny = torch.finfo(stats.dtype).tiny
            var = output_variances(stats, self.activation, weights, biases)
            # the common case in one reduction (NaN fails it and goes on to the full test)
            if var.numel() == 0:
                return False
            if bool(var.min() >= tiny):
                return True
            nonzero_input = (points != 0).any(-1)
            # finite values only: overflow and NaN are reported by _checked_output
            low = (var < tiny) & torch.isfinite(var)
            collapsed = low & nonzero_input.unsqueeze(-1)
            if not bool(collapsed.any()):
                return False
            layers = collapsed.reshape(-1, collapsed.shape[-1]).any(0).nonzero().flatten().tolist()
        depth = getattr(self, "depth", getattr(self, "num_layers", 1))
        name, dtype = type(self).__name__, stats.dtype
        if layers[0] == 0:
            raise FloatingPointError(
                f"{name} underflowed in {dtype} in its first layer: inputs as small as "
                f"{float(points.detach().abs().amax(-1)[nonzero_input].min()):.3g} give variances below the "
                f"smallest normal {dtype} number ({tiny:.3g}), so their kernel values would be rounding "
                "noise. Rescale the inputs (e.g. standardise them) or use float64; "
                "gp_ntk.settings.check_finite(False) returns the values instead."
            )
        raise FloatingPointError(
            f"{name} underflowed in {dtype}: the layer variances of some inputs collapse below the "
            f"smallest normal {dtype} number ({tiny:.3g}) from layer {layers[0] + 1} of {depth + 1} on "
            f"(they shrink like (weight_variance * E[phi(u)^2] / Var u)**depth; "
            f"weight_variance={self._weight_summary()}, depth={depth}), so the kernel would be "
            "rounding noise or zero. Use float64, a smaller depth or a larger weight_variance; "
            "gp_ntk.settings.check_finite(False) returns the values instead."
        )

    def _block(
        self, side1: Side, side2: Side, outputs: str, variances: dict[str, Tensor]
    ) -> tuple[Tensor, ...]:
        """The matrices between two sides (``side1 is side2``: a symmetric square).

        ``outputs`` is ``"kernel"`` (the kernel itself) or, for deep networks, ``"nngp"`` or
        ``"nngp+ntk"``.
        """
        symmetric = side1 is side2
        x1, x2 = side1.points, side2.points
        weight, bias = self._first_layer(x1, variances)
        cov = first_layer_covariance(x1, x2, weight, bias, symmetric)
        weights, biases = self._recursion_layers(cov, False, variances)
        compute_ntk = outputs == "nngp+ntk" or (outputs == "kernel" and self._returns_ntk)
        standard = self._standard_ntk(x1, x2, False, symmetric) if compute_ntk else None
        nngp, ntk = block_recursion(
            cov,
            side1.stats,
            side2.stats,
            self.activation,
            weights,
            biases,
            compute_ntk,
            symmetric,
            (side1.zeros, side2.zeros),
            standard,
            side1.group is not None and side1.group is side2.group,
        )
        if side1.exponents is not None or side2.exponents is not None:
            e1, e2, num_layers = side1.exponents, side2.exponents, len(weights)
            nngp = self._rescale_output(nngp, e1, e2, num_layers, False)
            ntk = None if ntk is None else self._rescale_output(ntk, e1, e2, num_layers, False)
        if outputs == "kernel":
            return (ntk if self._returns_ntk else nngp,)
        return (nngp,) if outputs == "nngp" else (nngp, ntk)

    def _diagonal_outputs(
        self, x1: Tensor, x2: Tensor, compute_ntk: bool, variances: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """``(nngp, ntk)`` of the pairs ``(x1[i], x2[i])`` in O(n)."""
        # the sides' statistics check for underflow, and for x1 is x2 their first-layer
        # variances are the very ones of the full matrix, so that its diagonal and this one
        # are one computation
        side1 = self._side(x1, variances)
        side2 = side1 if x1 is x2 else self._side(x2, variances)
        return self._pair_diagonal(side1, side2, compute_ntk, variances)

    def _pair_diagonal(
        self, side1: Side, side2: Side, compute_ntk: bool, variances: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """``(nngp, ntk)`` of the pairs of rows of two sides (``side1 is side2``: each point with itself)."""
        x1, x2 = side1.points, side2.points
        if side1 is side2:
            var1 = cov = var2 = side1.stats[..., 0]
        else:
            weight, bias = self._first_layer(x1, variances)
            var1, cov, var2 = linear_covariances(x1, x2, weight, bias, diag=True)
        weights, biases = self._recursion_layers(cov, True, variances)
        standard = self._standard_ntk(x1, x2, True, side1 is side2) if compute_ntk else None
        nngp, ntk = layer_recursion(
            var1, cov, var2, self.activation, weights, biases, compute_ntk, diag=True, standard_ntk=standard
        )
        if side1.exponents is not None or side2.exponents is not None:
            e1, e2, num_layers = side1.exponents, side2.exponents, len(weights)
            nngp = self._rescale_output(nngp, e1, e2, num_layers, True)
            ntk = None if ntk is None else self._rescale_output(ntk, e1, e2, num_layers, True)
        return nngp, ntk

    def _evaluate(
        self, x1: Tensor, x2: Tensor, diag: bool, last_dim_is_batch: bool, **variances: Tensor
    ) -> Tensor:
        """The kernel from explicitly given hyperparameters (see :meth:`_variances`), in one piece."""
        if last_dim_is_batch:
            x1, x2 = _features_as_batch(x1, x2)
        if diag:
            nngp, ntk = self._diagonal_outputs(x1, x2, self._returns_ntk, variances)
            return ntk if self._returns_ntk else nngp
        side1 = self._side(x1, variances)
        side2 = side1 if x1 is x2 else self._side(x2, variances)
        return self._block(side1, side2, "kernel", variances)[0]

    def _check_inputs(self, x1: Tensor, x2: Tensor, diag: bool, last_dim_is_batch: bool) -> None:
        """:func:`check_inputs` with this kernel's ARD width and batch shape."""
        check_inputs(
            x1,
            x2,
            self.ard_num_dims,
            diag=diag,
            batch_shape=self.batch_shape,
            last_dim_is_batch=last_dim_is_batch,
        )

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if same_points(x1, x2):
            x2 = x1  # (before the checks: one finiteness scan, not two)
        self._check_inputs(x1, x2, diag, last_dim_is_batch)
        warn_if_uncentred(self, x1, x2)
        variances = self._variances()
        if diag or last_dim_is_batch:
            return self._checked_output(
                self._evaluate(x1, x2, diag, last_dim_is_batch, **variances), (x1, x2, variances)
            )
        if settings.lazy_evaluation.applies(x1.shape[-2], x2.shape[-2]):
            return BlockedKernelLinearOperator(
                x1,
                x2,
                covar_func=_KernelFunctions(self),
                num_nonbatch_dimensions=self._NONBATCH_DIMENSIONS,
                **variances,
            )
        (result,) = self._dense(x1, x2, variances, "kernel")
        return self._checked_output(result, (x1, x2, variances))

    def matrix_and_variances(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        r"""``k(x1, x2)`` with the variances ``k(x1, x1)`` and ``k(x2, x2)`` of its rows and columns, in one pass.

        The per-point statistics that the matrix needs already determine each point's variance, so
        the two diagonals cost O(n) on top of the matrix instead of two more kernel calls
        (:class:`~gp_ntk.kernels.UnitVarianceKernel` divides by them). The values are those of
        ``k(x1, x2)``, ``k(x1, diag=True)`` and ``k(x2, diag=True)``, dense. ``None`` where the matrix
        would be evaluated lazily or in row blocks (large inputs), or where the kernel selects
        ``active_dims``: call the kernel instead.

        Args:
            x1: ``(..., n, d)`` inputs.
            x2: ``(..., m, d)`` inputs (``x2`` the same points as ``x1``, see
                ``gp_ntk.kernels._contract.same_points``: the symmetric matrix and one diagonal).
        """
        if self.active_dims is not None:
            return None
        if same_points(x1, x2):
            x2 = x1
        self._check_inputs(x1, x2, False, False)
        batch = (
            x1.shape[:-2] if x1.shape[:-2] == x2.shape[:-2] else broadcast_shape(x1.shape[:-2], x2.shape[:-2])
        )
        num_elements = x1.shape[-2] * x2.shape[-2] * max(1, batch.numel())
        if settings.lazy_evaluation.applies(x1.shape[-2], x2.shape[-2]) or settings.block_evaluation.applies(
            num_elements
        ):
            return None
        warn_if_uncentred(self, x1, x2)
        variances = self._variances()
        side1 = self._side(x1, variances)
        side2 = side1 if x1 is x2 else self._side(x2, variances)
        (matrix,) = self._block(side1, side2, "kernel", variances)
        diagonals = []
        for side, x in ((side1, x1), (side2, x2)) if side2 is not side1 else ((side1, x1),):
            nngp, ntk = self._pair_diagonal(side, side, self._returns_ntk, variances)
            diagonals.append(self._checked_output(ntk if self._returns_ntk else nngp, (x, x, variances)))
        matrix = self._checked_output(matrix, (x1, x2, variances))
        return matrix, diagonals[0], diagonals[-1]

    def unit_variance_matrix(self, x1: Tensor, x2: Tensor) -> Tensor | None:
        r""":math:`k(x_i, y_j) / \sqrt{k(x_i, x_i)\,k(y_j, y_j)}` as one autograd node, or ``None``.

        :class:`~gp_ntk.kernels.UnitVarianceKernel`'s matrix for small dense blocks of a
        ReLU-family or rectified-square (``ArcCos(2)``) kernel in the NTK parameterization with
        biases (``gp_ntk.bo``'s default): the
        first layer, the per-point statistics, the recursion and the normalisation in one forward
        pass with a hand-written backward pass (``gp_ntk.kernels._unit_block``), which at BO sizes
        costs a fraction of the generic evaluation's operations. The values are those of the
        generic path. ``None`` wherever that path is needed instead (another activation, zero
        variances, ``active_dims``, large or compiled blocks): call
        :meth:`matrix_and_variances` or the kernel.
        """
        coefficients = fused_block_coefficients(self.activation)
        if coefficients is None or self.active_dims is not None or torch.compiler.is_compiling():
            return None
        if same_points(x1, x2):
            x2 = x1
        self._check_inputs(x1, x2, False, False)
        rows, cols = x1.shape[-2], x2.shape[-2]
        if x1.shape[:-2] == x2.shape[:-2]:
            batch = x1.shape[:-2]
        else:
            batch = broadcast_shape(x1.shape[:-2], x2.shape[:-2])
        if settings.lazy_evaluation.applies(rows, cols) or settings.block_evaluation.applies(
            rows * cols * max(1, batch.numel())
        ):
            return None
        if not x1.dtype.is_floating_point or self._standard_ntk(x1, x2, False, x1 is x2) is not None:
            return None
        variances = self._variances()
        weight, bias = self._first_layer(x1, variances)
        weights, biases = self._recursion_layers(x1, False, variances)
        if bias is None or not all(isinstance(v, Tensor) for v in (*weights, *biases)):
            return None
        warn_if_uncentred(self, x1, x2)
        symmetric = x2 is x1
        sides, diagonals = [], []
        for x in (x1,) if symmetric else (x1, x2):
            side, diagonal = self._constant_side(x, variances, not symmetric)
            if side is None:
                return None
            sides.append(side)
            diagonals.append(diagonal)
        # (pairs of one point twice, where the activation needs them found: the block sets them to 1)
        identical = needs_identical_points(self.activation) and shares_variances(
            sides[0].stats[..., 0], sides[-1].stats[..., 0], symmetric
        )
        matrix = unit_variance_block(
            self.activation,
            coefficients,
            x1,
            x2,
            weight,
            bias,
            weights,
            biases,
            sides[0].stats,
            sides[-1].stats,
            None if symmetric else diagonals[0],
            None if symmetric else diagonals[1],
            self._returns_ntk,
            identical,
        )
        return self._checked_output(matrix, (x1, x2, variances))

    #: how many inputs :meth:`_constant_side` remembers (a BO acquisition call evaluates the
    #: candidates against the training points and against themselves: two sides)
    _CONSTANT_SIDES = 2

    def _constant_side(
        self, x: Tensor, variances: dict[str, Tensor], with_diagonal: bool
    ) -> tuple[Side | None, Tensor | None]:
        """``x``'s statistics without gradient (and its points' own variances ``k(x, x)``), or
        ``(None, None)`` where the fused path does not apply (zero variances, rescaled inputs).

        Remembered for the last few inputs and hyperparameter values, compared by value: an
        acquisition function evaluates the same training points at every call, and its
        candidates in two blocks of one call. The statistics are constants of the fused
        function, whose backward pass differentiates them itself, so that a remembered copy is as
        good as a new one.
        """
        values = tuple(variances.values())
        memo = self.__dict__.get("_constant_sides", ())
        # (statistics computed with the finiteness checks off serve only while they are off)
        checked = settings.check_finite.on()
        for entry in memo:
            if (
                (entry[4] or not checked)
                and _same_values(entry[0], x)
                and all(_same_values(a, b) for a, b in zip(entry[1], values))
            ):
                side, diagonal, checked = entry[2], entry[3], entry[4]
                break
        else:
            side = diagonal = None
            with torch.no_grad():
                side = self._side(x, variances)
            # (a side's group only records that its points are distinct: unit_variance_matrix
            # checks the pairs across sides where the activation needs it)
            if side.exponents is not None or any(side.zeros):
                return None, None
            entry = None
        if with_diagonal and diagonal is None:
            with torch.no_grad():
                nngp, ntk = self._pair_diagonal(side, side, self._returns_ntk, variances)
            diagonal = self._checked_output(ntk if self._returns_ntk else nngp, (x, x, variances))
        if entry is None or (with_diagonal and entry[3] is None):
            kept = tuple(e for e in memo if e is not entry)[: self._CONSTANT_SIDES - 1]
            key = x.detach().clone()
            # (the remembered side holds the copy, not x: x may carry the graph of its call)
            side = side._replace(points=key)
            frozen = (key, tuple(v.detach().clone() for v in values), side, diagonal, checked)
            self.__dict__["_constant_sides"] = (frozen, *kept)
        return side, diagonal

    def nngp_and_ntk(
        self,
        x1: Tensor,
        x2: Tensor,
        diag: bool = False,
        compute_ntk: bool = True,
        last_dim_is_batch: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        r"""The network's NNGP and NTK from one pass (the NTK recursion needs the NNGP one anyway).

        Every kernel here is the NNGP of a network: the deep kernels' fully-connected network,
        the arc-cosine kernel's composition of ``ArcCos(n)`` layers (weight variance 2, the
        factor of Cho & Saul's normalisation), the erf kernel's one-hidden-layer erf network. The
        NTK is that network's, in the NTK parameterization: :math:`\Theta^{(1)} = \Sigma^{(1)}`,
        :math:`\Theta^{(l+1)} = \Sigma^{(l+1)} + \sigma_{w,l+1}^2\,\mathbb E[\phi'\phi']\,\Theta^{(l)}`
        (for :class:`~gp_ntk.NTKKernel` with ``parameterization="standard"``, the standard one).

        Takes the inputs as they are (no ``active_dims`` selection, unlike calling the kernel);
        large matrices are evaluated in row blocks like ``forward``'s.
        """
        self._check_inputs(x1, x2, diag, last_dim_is_batch)
        variances = self._variances()
        if last_dim_is_batch:
            x1, x2 = _features_as_batch(x1, x2)
        if diag:
            nngp, ntk = self._diagonal_outputs(x1, x2, compute_ntk, variances)
        else:
            outputs = self._dense(x1, x2, variances, "nngp+ntk" if compute_ntk else "nngp")
            nngp, ntk = outputs if compute_ntk else (outputs[0], None)
        inputs = (x1, x2, variances)
        nngp = self._checked_output(nngp, inputs)
        return nngp, (None if ntk is None else self._checked_output(ntk, inputs))

    def _dense(
        self, x1: Tensor, x2: Tensor, variances: dict[str, Tensor], outputs: str = "kernel"
    ) -> tuple[Tensor, ...]:
        """The full matrices (see :meth:`_block`), in row blocks where they are large.

        The inputs must have been checked: blocks skip the checks. Matrices of at least
        :class:`gp_ntk.settings.compile_kernels`' size have their blocks compiled.
        """
        batch = broadcast_shape(x1.shape[:-2], x2.shape[:-2])
        num_elements = x1.shape[-2] * x2.shape[-2] * max(1, batch.numel())
        if not settings.block_evaluation.applies(num_elements):
            side1 = self._side(x1, variances)
            side2 = side1 if x1 is x2 else self._side(x2, variances)
            return self._block(side1, side2, outputs, variances)
        compiled = settings.compile_kernels.applies(num_elements)

        def evaluate(side1: Side, side2: Side, **values: Tensor) -> tuple[Tensor, ...]:
            return run_block(self, side1, side2, outputs, compiled, values)

        def statistics(x: Tensor, **values: Tensor) -> Side:
            return self._side(x, values)

        return DenseKernel.apply(
            evaluate,
            statistics,
            tuple(variances),
            x1 is x2,
            settings.block_evaluation.block_elements_for(x1.device),
            x1,
            x2,
            *variances.values(),
        )

    def _weight_summary(self) -> list[float]:
        weights = self.weight_variance if self.weight_variance is not None else self.input_weight_variance
        return weights.detach().flatten().tolist()

    def _checked_output(
        self, result: Tensor, inputs: tuple[Tensor, Tensor, dict[str, Tensor]] | None = None
    ) -> Tensor:
        """Refuse a non-finite kernel value, saying what went wrong.

        ``inputs = (x1, x2, variances)`` of the evaluation let the message name the cause
        (:meth:`_non_finite_cause`).
        """
        if settings.check_finite.on() and not _all_finite(result):
            cause = None
            if inputs is not None:
                try:
                    cause = self._non_finite_cause(*inputs)
                except Exception:  # a diagnosis must not hide the error it explains
                    cause = None
            if cause is None:
                cause = (
                    "returned non-finite values",
                    "a variance overflowed through the layers or the activation returned non-finite "
                    "values. Use float64, smaller inputs, a smaller weight_variance or a smaller depth",
                )
            raise FloatingPointError(
                f"{type(self).__name__} {cause[0]} in {result.dtype}: {cause[1]}; "
                "gp_ntk.settings.check_finite(False) returns the non-finite values instead."
            )
        return result

    def _non_finite_cause(self, x1: Tensor, x2: Tensor, variances: dict[str, Tensor]) -> tuple[str, str]:
        """What made a kernel value non-finite, from the per-point variances of every layer."""
        depth = getattr(self, "depth", getattr(self, "num_layers", 1))
        dtype = x1.dtype
        degree = getattr(self.activation, "homogeneity_degree", None)
        rescaled = False
        with torch.no_grad():
            for x in (x1, x2):
                if not bool(torch.isfinite(x).all()):
                    return ("returned non-finite values", "the inputs contain NaN or infinite values")
                side = self._side(x, variances, check=False)
                rescaled = rescaled or side.exponents is not None
                weights, biases = self._recursion_layers(side.stats[..., 0], True, variances)
                var = output_variances(side.stats, self.activation, weights, biases)
                bad = ~torch.isfinite(var)
                if not bool(bad.any()):
                    continue
                layer = int(bad.reshape(-1, bad.shape[-1]).any(0).nonzero()[0])
                if layer == 0:
                    largest = float(x.abs().max())
                    return (
                        "overflowed",
                        f"the first layer's covariances overflow: inputs as large as {largest:.3g} give "
                        f"x^T x beyond the largest {dtype} number ({torch.finfo(dtype).max:.3g}). Rescale "
                        "the inputs (e.g. standardise them) or use float64",
                    )
                before = var[..., layer - 1][bad[..., layer]]
                nan = bool(torch.isnan(var[..., layer][bad[..., layer]]).any())
                where = f"layer {layer + 1} of {depth + 1}"
                moderate = bool(torch.isfinite(before).all()) and float(before.abs().max()) < math.sqrt(
                    torch.finfo(dtype).max
                )
                if nan and moderate:
                    return (
                        "returned non-finite values",
                        f"the activation {self.activation!r} returned non-finite values: its variance "
                        f"E[phi(u)^2] at {where} is NaN for finite input variances (e.g. "
                        f"{float(before[0]):.3g}). Use an activation that is finite on the whole real line",
                    )
                if degree is not None and degree > 1:
                    return (
                        "overflowed",
                        f"the variance overflowed at {where}: {self.activation!r} raises the variance to "
                        f"the power {degree:g} in every layer (largest input variance "
                        f"{float(var[..., 0].max()):.3g}). Use smaller inputs, float64 or a lower order/depth",
                    )
                return (
                    "overflowed",
                    f"the variance overflowed through depth at {where}: the layer variances grow like "
                    f"weight_variance**depth (weight_variance={self._weight_summary()}, depth={depth}). "
                    "Use float64, a smaller weight_variance or a smaller depth",
                )
            if rescaled:
                largest = max(float(x1.abs().max()), float(x2.abs().max()))
                return (
                    "overflowed",
                    f"the kernel's values exceed the largest {dtype} number: this bias-free kernel scales "
                    f"like (|x| |y|)**{self._homogeneity_power(len(weights))} and the inputs are as large as "
                    f"{largest:.3g}. Rescale the inputs (e.g. standardise them) or use float64",
                )
            if self._returns_ntk:
                with settings.check_finite(False):
                    _, ntk = self._diagonal_outputs(x1, x1, True, variances)
                if ntk is not None and not bool(torch.isfinite(ntk).all()):
                    return (
                        "overflowed",
                        "the NTK overflowed through depth although the NNGP variances are finite: it "
                        "grows like (weight_variance * E[phi'(u)^2])**depth "
                        f"(weight_variance={self._weight_summary()}, depth={depth}). Use float64, a "
                        "smaller weight_variance or a smaller depth",
                    )
        return (
            "returned non-finite values",
            f"every layer's variance is finite, so the activation {self.activation!r} returned non-finite "
            "values for some pair of inputs (its dual E[phi(u)phi(v)] or E[phi'(u)phi'(v)]). Check that "
            "the activation is finite on the whole real line",
        )

    def __call__(self, x1: Tensor, x2: Tensor | None = None, diag: bool = False, **params):
        # GPyTorch silently treats 1-D input as n x 1; a kernel on network inputs refuses it
        # instead, since a flat feature vector is the more likely mistake. The value checks
        # (finite entries, ARD width after active_dims) run in forward, which ScaleKernel and
        # lazy evaluation reach without passing through here.
        last_dim_is_batch = bool(params.get("last_dim_is_batch", False))
        check_inputs(
            x1,
            x1 if x2 is None else x2,
            check_values=False,
            diag=diag and x2 is not None,
            # with last_dim_is_batch the features (after active_dims) are a batch: forward checks
            batch_shape=None if last_dim_is_batch else self.batch_shape,
        )
        if self.active_dims is not None:
            num_features = x1.shape[-1]
            outside = [int(i) for i in self.active_dims.tolist() if not 0 <= int(i) < num_features]
            if outside:
                raise ValueError(
                    f"active_dims {self.active_dims.tolist()} selects feature(s) {outside}, but the inputs "
                    f"have {num_features} features (indices 0 to {num_features - 1})"
                )
        if self.ard_num_dims is not None:
            width = x1.shape[-1] if self.active_dims is None else len(self.active_dims)
            if width != self.ard_num_dims:
                raise ValueError(
                    f"inputs must have ard_num_dims={self.ard_num_dims} features (after active_dims), got {width}"
                )
        return super().__call__(x1, x2, diag=diag, **params)
