"""What a gp_ntk kernel promises about its arguments and its saved state.

Argument parsing shared by the constructors (integers, initial variances), the closures that
attach priors to the variances (module-level, so that kernels with priors pickle), and the
structure entry of ``state_dict`` with the checks that run before anything is loaded.
"""

from __future__ import annotations

import json
import numbers
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: the key (after the module's prefix) under which torch stores ``get_extra_state()``
STRUCTURE_KEY = getattr(torch.nn.modules.module, "_EXTRA_STATE_KEY_SUFFIX", "_extra_state")

# version of the structure entry's encoding, stored with it
_STRUCTURE_FORMAT = 1


# ------------------------------------------------------------------------------- inputs


def same_points(x1: Tensor, x2: Tensor) -> bool:
    """Whether ``k(x1, x2)`` may be evaluated as ``k(x1, x1)``: the same tensor, or the same view of it.

    GPyTorch's exact predictions call a kernel on two slices of one tensor (the test rows of
    the training and test points concatenated), which are distinct objects. Taken as they
    come, the test block would be evaluated as a general matrix, with each side's statistics
    twice, instead of as the symmetric one, exactly symmetric with an exactly unit
    correlation diagonal. Equal values are not enough where gradients flow: ``x2`` may be
    ``x1.detach()``. So the two must be views of one base tensor at one place (storage,
    offset, shape and strides), both or neither recording gradients, or, where neither
    records them, read the same memory the same way. O(1): nothing is compared elementwise.
    """
    if x1 is x2:
        return True
    if (
        x1.shape != x2.shape
        or x1.stride() != x2.stride()
        or x1.dtype != x2.dtype
        or x1.device != x2.device
        or x1.data_ptr() != x2.data_ptr()
        or x1.requires_grad != x2.requires_grad
    ):
        return False
    if not x1.requires_grad:
        return True
    # views of one base differentiate into it alike; anything else (a detached alias, two
    # leaves over one storage) may carry its own gradient
    return x1._base is not None and x1._base is x2._base


class UncentredInputWarning(UserWarning):
    r"""Every input of a dot-product kernel lies in :math:`[0, 1]^d`, one orthant.

    Issued once per process by the network kernels (:func:`warn_if_uncentred`); silence it
    with ``warnings.filterwarnings("ignore", category=gp_ntk.UncentredInputWarning)``.
    """


_uncentred_warned = False

# the warning points at the first frame outside these: the user's line that built or fitted the model
_LIBRARY_PACKAGES = frozenset({"gp_ntk", "gpytorch", "linear_operator", "botorch", "torch"})


def _user_stacklevel() -> int:
    """``stacklevel`` for a warning issued by this module's caller that names the user's frame."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _LIBRARY_PACKAGES:
        frame, level = frame.f_back, level + 1
    return level


def reset_uncentred_warning() -> None:
    """Let :func:`warn_if_uncentred` warn again (it warns once per process)."""
    global _uncentred_warned
    _uncentred_warned = False


def warn_if_uncentred(kernel: torch.nn.Module, x1: Tensor, x2: Tensor) -> bool:
    r"""Warn, once per process, when a kernel's training inputs all lie in :math:`[0, 1]^d`.

    That is where BoTorch's ``Normalize`` puts a search box. NNGP, NTK, arc-cosine and erf
    kernels see inputs through their norms and angles at the origin; in one orthant all angles
    are below 90 degrees and concentrate as :math:`d` grows, so a deep kernel is nearly
    constant and the GP can hardly tell points apart (``docs/kernels.md``, section 11).

    Checked only where it is cheap and telling: on ``k(X, X)`` (``x1 is x2``) of a kernel in
    training mode, with :math:`d \ge 2` and :math:`n \ge 2`, outside ``torch.compile`` tracing,
    and not at all once the warning has been issued (one reduction, one device sync, per
    checked call until then). Returns whether it warned.
    """
    global _uncentred_warned
    if _uncentred_warned or x1 is not x2 or not kernel.training or torch.compiler.is_compiling():
        return False
    if x1.dim() < 2 or x1.shape[-1] < 2 or x1.shape[-2] < 2:
        return False
    with torch.no_grad():
        if not bool(((x1 >= 0) & (x1 <= 1)).all()):
            return False
    _uncentred_warned = True
    warnings.warn(
        f"every input of {type(kernel).__name__} lies in [0, 1]^d, one orthant: this kernel sees "
        "inputs through their angles at the origin, which are all small there, so it is nearly "
        "constant. Centre the inputs on the origin: in BoTorch use "
        "input_transform=gp_ntk.bo.CenteredNormalize(d, bounds) instead of Normalize(d, bounds) "
        "(as gp_ntk.bo.make_bo_model does); otherwise pass x - 0.5. Shown once per process; "
        "silence it with warnings.filterwarnings('ignore', category=gp_ntk.UncentredInputWarning).",
        UncentredInputWarning,
        stacklevel=_user_stacklevel(),
    )
    return True


# ---------------------------------------------------------------------------- arguments


def as_integer(value: Any, message: str, minimum: int = 1) -> int:
    """``value`` as a Python ``int`` if it is an integral number (NumPy's too, not a bool).

    Raises ``ValueError(message)`` otherwise or below ``minimum``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{message}, got {value!r}")
    return int(value)


def as_initial_values(value: Any, name: str) -> list[float]:
    """A constructor's variance argument as a list of floats.

    A number, or a 1-D sequence, tensor or array of numbers: lists, tuples, tensors and arrays
    are read the same way. Batched initial values are set after construction through the
    property (``kernel.weight_variance = values``).
    """
    if isinstance(value, (Tensor, np.ndarray)):
        if value.ndim > 1:
            raise ValueError(
                f"{name} must be a number or a 1-D sequence of numbers, got shape {tuple(value.shape)}; "
                f"set batched values after construction (kernel.{name} = values)"
            )
        values = torch.as_tensor(value).detach().reshape(-1).to(torch.float64).tolist()
    elif isinstance(value, Sequence) and not isinstance(value, str):
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a sequence of numbers, got {value!r}") from None
    else:
        try:
            values = [float(value)]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a sequence of numbers, got {value!r}") from None
    if not values:
        raise ValueError(f"{name} must not be empty")
    if not all(np.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    return values


def check_count(values: list[float], count: int, name: str, accepted: str) -> None:
    """Refuse a list of initial values that is neither one number nor ``count`` numbers.

    ``accepted`` says what ``count`` is, e.g. ``"depth + 1 = 4 per-layer values"``.
    """
    if len(values) != 1 and len(values) != count:
        raise ValueError(f"{name}: got {len(values)} values; pass one number or {accepted}")


def check_single_layer_counts(
    kernel: str, weights: list[float], biases: list[float], ard_num_dims: Any
) -> None:
    """Counts of initial values for a kernel with one weight and one bias variance (or ARD)."""
    if ard_num_dims is None and len(weights) > 1:
        raise ValueError(
            f"weight_variance: {kernel} has a single weight variance, got {len(weights)} values; "
            f"pass ard_num_dims={len(weights)} for one per input feature"
        )
    if ard_num_dims is not None:
        check_count(
            weights,
            as_integer(ard_num_dims, "ard_num_dims must be a positive integer or None"),
            "weight_variance",
            f"ard_num_dims = {ard_num_dims} values (one per input feature)",
        )
    if len(biases) > 1:
        raise ValueError(f"bias_variance: {kernel} has a single bias variance, got {len(biases)} values")


def exact_values(value: Any) -> Tensor:
    """``value`` as a float64 CPU tensor without any intermediate rounding.

    A Python float becomes its own float64 value, not torch's default float32 one.
    """
    if isinstance(value, Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"expected a number, a sequence of numbers or a tensor, got {value!r}") from None


def broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether torch broadcasting expands ``shape`` to ``target`` (trailing dimensions aligned)."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


# ---------------------------------------------------------------------------- prior closures


def get_variance(name: str, module: torch.nn.Module) -> Tensor:
    """A prior's closure: the constrained variance ``name`` of ``module``."""
    return getattr(module, name)


def set_variance(name: str, module: torch.nn.Module, value: Tensor) -> None:
    """A prior's setting closure: write ``value`` into variance ``name`` through its setter."""
    getattr(module, f"_set_{name}")(value)


# ---------------------------------------------------------------------------- structure


def describe_activation(activation: Any) -> str:
    """A stable text for an activation: its repr without memory addresses."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(activation))


def encode_structure(structure: dict[str, Any]) -> Tensor:
    """The structure as a uint8 tensor of JSON.

    A tensor, not a dict, because code that snapshots a model (BoTorch's rollback during
    ``fit_gpytorch_mll``, ``value.detach().clone()`` loops) expects every ``state_dict``
    value to be one, and ``torch.load(weights_only=True)`` reads it.
    """
    text = json.dumps({"format": _STRUCTURE_FORMAT, **structure}, sort_keys=True)
    return torch.tensor(list(text.encode()), dtype=torch.uint8)


def decode_structure(entry: Any) -> dict[str, Any]:
    if isinstance(entry, Tensor) and entry.dtype == torch.uint8 and entry.dim() == 1:
        try:
            structure = json.loads(bytes(entry.tolist()).decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            structure = None
        if isinstance(structure, dict):
            structure.pop("format", None)
            return structure
    raise RuntimeError(f"the state_dict's {STRUCTURE_KEY} entry is not a gp_ntk kernel structure: {entry!r}")


def _differences(saved: dict[str, Any], own: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {saved.get(key, '(absent)')!r} in the state_dict, {own.get(key, '(absent)')!r} here"
        for key in sorted(set(saved) | set(own))
        if saved.get(key) != own.get(key)
    ]


def check_state_dict(
    module: torch.nn.Module,
    structure: dict[str, Any],
    state_dict: dict[str, Any],
    prefix: str,
    strict: bool | None,
    strict_shapes: bool,
) -> None:
    """Refuse a state dict before any of it is copied into ``module`` (and its children).

    ``strict`` is ``load_state_dict``'s argument when ``module`` is what is being loaded, and
    ``None`` when it is loaded as part of a parent module (torch does not tell submodules).
    Checked: the saved structure (when the entry is present), refused with ``strict`` or
    ``None`` and loaded with a warning under ``strict=False``; with ``strict``, the key set of
    ``module``'s whole subtree (a parent checks its keys itself, after loading); always, the
    shapes of the tensors present on both sides, unless GPyTorch's ``load_strict_shapes(False)``
    is on.
    """
    name = type(module).__name__
    structure_key = prefix + STRUCTURE_KEY
    problems: list[str] = []
    if structure_key in state_dict:
        differences = "; ".join(_differences(decode_structure(state_dict[structure_key]), structure))
        if differences and strict is False:
            warnings.warn(
                f"loading into {name} with strict=False a state_dict saved from a kernel of another "
                f"structure ({differences})",
                RuntimeWarning,
                stacklevel=3,  # the caller of the kernel's load_state_dict (only it passes strict=False)
            )
        elif differences:
            hint = "" if strict else f" (to load it anyway, remove the {structure_key!r} entry)"
            problems.append(f"it was saved from a kernel of another structure{hint}: {differences}")
    own = module.state_dict(prefix=prefix, keep_vars=True)
    given = [key for key in state_dict if key.startswith(prefix)]
    if strict:
        missing = [key for key in own if key not in state_dict and key != structure_key]
        unexpected = [key for key in given if key not in own]
        if missing:
            problems.append("missing key(s) " + ", ".join(missing))
        if unexpected:
            problems.append("unexpected key(s) " + ", ".join(unexpected))
    if strict_shapes:
        for key in given:
            mine, theirs = own.get(key), state_dict[key]
            if key == structure_key or not isinstance(mine, Tensor) or not isinstance(theirs, Tensor):
                continue
            if mine.shape != theirs.shape:
                problems.append(
                    f"{key} has shape {tuple(theirs.shape)} in the state_dict, {tuple(mine.shape)} here"
                )
    if problems:
        raise RuntimeError(
            f"Error(s) in loading state_dict for {name}; nothing was loaded: " + "; ".join(problems) + "."
        )
