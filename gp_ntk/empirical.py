r"""Empirical neural tangent kernels of finite ``torch.nn`` networks.

For a network :math:`f_\theta: \mathbb R^{\text{input}} \to \mathbb R^{O}` (outputs of any
shape flattened to :math:`O`) with trainable parameters :math:`\theta \in \mathbb R^P`, the
empirical NTK is the Gram matrix of the parameter Jacobians

.. math::
    \Theta_{io,jq} = \sum_{p=1}^{P} \frac{\partial f_o(x_i)}{\partial\theta_p}
    \frac{\partial f_q(x_j)}{\partial\theta_p},

returned as ``(n1, n2, O, O)`` (``mode="full"``), its mean over the output pairs
:math:`\frac1O\sum_o \Theta_{io,jo}` (``"trace"``, neural-tangents' ``trace_axes``) or its
output diagonal ``(n1, n2, O)`` (``"diagonal"``, neural-tangents' ``diagonal_axes``).

Three ways of computing it give the same numbers:

* ``"jacobian"``: per-sample Jacobians by ``vmap(jacrev)`` over chunks of samples, contracted
  by one matrix product; memory ``chunk * O * P``.
* ``"ntvp"``: NTK-vector products, :math:`\Theta v = J_1 (J_2^\top v)` by a ``vjp`` of the
  batch followed by a ``jvp``, for one-hot ``v``; never holds a per-sample Jacobian of the
  first side, for very large ``P``.
* ``"structured"``: for every parameter of a :class:`~torch.nn.Linear`,
  :class:`~torch.nn.Conv1d` or :class:`~torch.nn.Conv2d` layer the contribution is assembled
  from the layer's inputs :math:`h` (captured by forward hooks) and the per-sample cotangents
  :math:`g_o = \partial f_o / \partial y` of its outputs (one backward pass per output). For a
  weight used at positions :math:`l` (sequence positions, convolution windows, repeated uses)
  :math:`\partial f_o(x_i)/\partial W = \sum_l g_{io,l} h_{i,l}^\top`, so

  .. math::
      \Theta^{W}_{io,jq} = \sum_{l,m} (h_{i,l}^\top h_{j,m})\,(g_{io,l}^\top g_{jq,m}).

  For a dense layer (one position) this costs ``n1 n2 (d_in + O^2 d_out)`` instead of the
  ``n1 n2 O^2 d_in d_out`` of a Jacobian contraction. Where the window count :math:`L` is large
  (convolutions) the pairwise :math:`L \times L` products cost more than the per-sample
  weight gradients :math:`\sum_l g_{io,l} h_{i,l}^\top` (one matrix product of the captured
  tensors, no autograd), and those are used instead; the choice is made per layer by operation
  count. Every other parameter (normalisation scales, embeddings, a weight used outside its
  layer) falls back to the Jacobian contraction; a rule is kept only where the gradient it
  reconstructs matches autograd on a probe batch (the first two samples of ``x1``).

``"auto"`` is ``"structured"``.

Parameters with ``requires_grad=False`` are left out; buffers are used as they are; a
parameter shared by several layers (tied weights) is one parameter whose gradient sums its
uses. Batch statistics couple the samples, so a model with a BatchNorm (or dropout) module in
training mode is refused: call ``model.eval()``.

.. [Jacot2018] A. Jacot, F. Gabriel, C. Hongler. Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks. NeurIPS 2018.
.. [Novak2022] R. Novak, J. Sohl-Dickstein, S. Schoenholz. Fast Finite Width Neural Tangent
    Kernel. ICML 2022.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import gpytorch
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from . import settings
from .engine import BlockedKernelLinearOperator, Side

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "EmpiricalNTKKernel",
    "LinearizedNetwork",
    "empirical_ntk",
    "empirical_ntk_diagonal",
    "empirical_ntk_monte_carlo",
    "linearize",
]

#: bytes of intermediate storage (Jacobians, captured activations) one chunk may use by default
DEFAULT_MEMORY_BUDGET = 2 * 2**30

MODES = ("full", "trace", "diagonal")
IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured")
_STRUCTURED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
# activations, autograd graphs and temporaries next to the features proper
_OVERHEAD = 4


# ---------------------------------------------------------------------------------- checks


def _check_choice(value, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _check_positive(value, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def _check_mode_of_model(model: nn.Module) -> None:
    coupled = [
        name or type(model).__name__
        for name, module in model.named_modules()
        if module.training
        and isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
    ]
    if coupled:
        raise ValueError(
            "model has modules in training mode whose outputs depend on the batch or on random draws "
            f"({', '.join(coupled[:5])}); the tangent kernel is defined for the deterministic "
            "per-sample network: call model.eval() first"
        )


def _trainable(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The parameters of the kernel, by name; tied parameters appear once (named_parameters)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found = dict(model.named_parameters())
    if names is None:
        params = {name: p.detach() for name, p in found.items() if p.requires_grad}
    else:
        params = {name: found[name].detach() for name in names}
    if not params:
        raise ValueError(
            "model has no parameters with requires_grad=True: its tangent kernel is 0-dimensional"
        )
    for name, p in params.items():
        if not p.dtype.is_floating_point:
            raise ValueError(f"parameter {name} must be floating point, got {p.dtype}")
    return params


def _check_inputs(params: dict[str, Tensor], x1: Tensor, x2: Tensor | None) -> None:
    dtype = next(iter(params.values())).dtype
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point or x.dim() < 1 or x.shape[0] < 1:
            raise ValueError(f"{name} must be a floating tensor (n, *input_shape) with n >= 1")
        if x.dtype != dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but the model's parameters are {dtype}")
    if x2 is not None and x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x2 must have the input shape of x1 {tuple(x1.shape[1:])}, got {tuple(x2.shape[1:])}"
        )


# ---------------------------------------------------------------------------------- features


@dataclass
class _GramTerm:
    """One weight's structured factors: inputs ``(c, L, K)`` and output cotangents ``(c, O, L, C)``."""

    name: str
    inputs: Tensor
    cotangents: Tensor


@dataclass
class _Features:
    """What the kernel between chunks is contracted from: Jacobian pieces and structured terms."""

    jacobian: Tensor | None  # (c, O, P_j), the per-sample Jacobians of the non-structured parameters
    grams: list[_GramTerm] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        if self.jacobian is not None:
            return self.jacobian.shape[0]
        return self.grams[0].inputs.shape[0]

    def numel(self) -> int:
        total = 0 if self.jacobian is None else self.jacobian.numel()
        return total + sum(t.inputs.numel() + t.cotangents.numel() for t in self.grams)


def _flat_output(model: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    out = functional_call(model, params, (x,))
    if not isinstance(out, Tensor):
        raise ValueError(f"model must return one tensor, got {type(out).__name__}")
    if out.dim() == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"model output must keep the batch dimension first: inputs ({x.shape[0]}, ...) gave "
            f"{tuple(out.shape)}"
        )
    return out.reshape(x.shape[0], -1)


def _jacobian(model: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """Per-sample Jacobians ``(c, O, P)`` of the flattened output w.r.t. ``params``."""

    def single(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(single), in_dims=(None, 0))(params, x)
    return torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in jac.values()], dim=-1)


@dataclass
class _Use:
    module: nn.Module
    inputs: Tensor
    perturbation: Tensor


def _layer_factors(module: nn.Module, h: Tensor) -> Tensor | None:
    """The layer input as ``(c, L, K)`` windows (L positions, K = the weight's fan-in), or None."""
    if isinstance(module, nn.Linear):
        return h.reshape(h.shape[0], -1, h.shape[-1]) if h.dim() >= 2 else None
    if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
        return None
    if isinstance(module, nn.Conv2d):
        if h.dim() != 4:
            return None
        patches = F.unfold(h, module.kernel_size, module.dilation, module.padding, module.stride)
    else:
        if h.dim() != 3:
            return None
        patches = F.unfold(
            h.unsqueeze(-2),
            (1, module.kernel_size[0]),
            (1, module.dilation[0]),
            (0, module.padding[0]),
            (1, module.stride[0]),
        )
    return patches.transpose(1, 2)


def _output_cotangents(module: nn.Module, grad: Tensor, num_outputs: int) -> Tensor:
    """Per-sample cotangents ``(O, c, ...)`` of a layer output as ``(c, O, L, C)``."""
    c = grad.shape[1]
    if isinstance(module, nn.Linear):
        return grad.reshape(num_outputs, c, -1, grad.shape[-1]).transpose(0, 1)
    channels = grad.shape[2]
    return grad.reshape(num_outputs, c, channels, -1).permute(1, 0, 3, 2)


@dataclass
class _Plan:
    """Which parameters take which path; fixed on a probe batch before the chunked loop."""

    names: list[str]  # every kernel parameter
    structured: dict[str, tuple[str, bool]]  # name -> ("weight" | "bias", use the pairwise route)
    num_outputs: int
    feature_numel: int  # per sample
    pass_numel: int  # per sample, the activations a feature pass keeps alive

    @property
    def fallback(self) -> list[str]:
        return [n for n in self.names if n not in self.structured]


def _structured_pass(
    model: nn.Module, params: dict[str, Tensor], originals: set[int], candidates: dict[int, str], x: Tensor
) -> tuple[Tensor, dict[str, list[_Use]]]:
    """Forward pass with hooks on the candidate layers; returns the output ``(c, O)`` and the uses."""
    uses: dict[str, list[_Use]] = {}

    def hook(module: nn.Module, inputs: tuple, output: Tensor):
        # a zero perturbation added to the output: its gradient is the output cotangent even if a
        # later in-place operation (ReLU(inplace=True)) overwrites the output tensor
        perturbation = torch.zeros_like(output, requires_grad=True)
        use = _Use(module, inputs[0].detach(), perturbation)
        for p in (module.weight, module.bias):
            if p is not None and id(p) in candidates:
                uses.setdefault(candidates[id(p)], []).append(use)
        return output + perturbation

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, _STRUCTURED_TYPES)
        and any(p is not None and id(p) in originals for p in (m.weight, m.bias))
    ]
    try:
        with torch.enable_grad():
            out = _flat_output(model, params, x)
    finally:
        for handle in handles:
            handle.remove()
    return out, uses


def _structured_features(
    model: nn.Module, params: dict[str, Tensor], plan: _Plan, x: Tensor, verify: bool = False
) -> tuple[_Features, set[str]]:
    """Features of a chunk; with ``verify`` also the names whose rule disagrees with autograd."""
    leaves = {n: params[n].detach().requires_grad_(True) for n in plan.structured}
    call_params = {**params, **leaves}
    # hooks go on the layers holding the original parameters; inside functional_call those
    # layers hold the leaves, by which the hooks attribute each use
    originals = {id(_getattr_path(model, n)) for n in plan.structured}
    candidates = {id(leaf): n for n, leaf in leaves.items()}
    out, uses = _structured_pass(model, call_params, originals, candidates, x)
    c, num_outputs = out.shape
    perturbations = list({id(u.perturbation): u.perturbation for us in uses.values() for u in us}.values())
    eye = torch.eye(num_outputs, dtype=out.dtype, device=out.device)
    grads: dict[int, list[Tensor]] = {id(p): [] for p in perturbations}
    for o in range(num_outputs if perturbations else 0):
        cot = eye[o].expand(c, num_outputs)
        found = torch.autograd.grad(out, perturbations, cot, retain_graph=True, allow_unused=True)
        for p, g in zip(perturbations, found):
            grads[id(p)].append(torch.zeros_like(p) if g is None else g)
    stacked = {k: torch.stack(v).detach() for k, v in grads.items()}

    pieces: list[Tensor] = []
    grams: list[_GramTerm] = []
    disagreeing: set[str] = set()
    reconstructed: dict[str, Tensor] = {}
    for name, (role, pairwise) in plan.structured.items():
        name_uses = uses.get(name, [])
        if not name_uses:
            disagreeing.add(name)
            continue
        if role == "bias":
            total = 0
            for u in name_uses:
                g = _output_cotangents(u.module, stacked[id(u.perturbation)], num_outputs)
                total = total + g.sum(2)
            pieces.append(total)
            reconstructed[name] = total
            continue
        windows, cots = [], []
        for u in name_uses:
            w = _layer_factors(u.module, u.inputs)
            if w is None or w.shape[0] != c or u.perturbation.shape[0] != c:
                break
            windows.append(w)
            cots.append(_output_cotangents(u.module, stacked[id(u.perturbation)], num_outputs))
        if len(windows) != len(name_uses):
            disagreeing.add(name)
            continue
        term = _GramTerm(name, torch.cat(windows, 1), torch.cat(cots, 2))
        if pairwise:
            grams.append(term)
        else:
            pieces.append(torch.einsum("aolc,alk->aock", term.cotangents, term.inputs).flatten(2))
        if verify:
            reconstructed[name] = term
    if verify and reconstructed:
        # random per-sample output weights: a rule that pairs the wrong samples or misses a use of
        # the parameter reconstructs a different gradient (own generator: the caller's RNG
        # state is left alone)
        generator = torch.Generator(device=out.device).manual_seed(0)
        weights = torch.randn(c, num_outputs, dtype=out.dtype, device=out.device, generator=generator)
        autograd = torch.autograd.grad(out, list(leaves.values()), weights, allow_unused=True)
        for name, exact in zip(leaves, autograd):
            if name in disagreeing or name not in reconstructed:
                continue
            value = reconstructed[name]
            if isinstance(value, _GramTerm):
                mine = torch.einsum("ao,aolc,alk->ck", weights, value.cotangents, value.inputs)
            else:
                mine = torch.einsum("ao,aoc->c", weights, value)
            exact = torch.zeros_like(leaves[name]) if exact is None else exact
            tol = 100 * math.sqrt(torch.finfo(out.dtype).eps) * (1 + float(exact.abs().max()))
            if (
                mine.numel() != exact.numel()
                or float((mine.reshape(-1) - exact.reshape(-1)).abs().max()) > tol
            ):
                disagreeing.add(name)
    fallback = plan.fallback
    if fallback:
        pieces.append(_jacobian(model, {n: params[n] for n in fallback}, x))
    jacobian = torch.cat(pieces, dim=-1) if pieces else None
    return _Features(jacobian, grams), disagreeing


def _getattr_path(module: nn.Module, name: str) -> Tensor:
    for part in name.split("."):
        module = getattr(module, part)
    return module  # type: ignore[return-value]


def _make_plan(model: nn.Module, params: dict[str, Tensor], x: Tensor, implementation: str) -> _Plan:
    """Decide the path of every parameter from a probe batch ``x`` (a few samples)."""
    with torch.no_grad():
        out = _flat_output(model, params, x)
    num_outputs = out.shape[1]
    structured: dict[str, tuple[str, bool]] = {}
    if implementation == "structured":
        by_object = {id(_getattr_path(model, n)): n for n in params}
        for module in model.modules():
            if not isinstance(module, _STRUCTURED_TYPES):
                continue
            for role in ("weight", "bias"):
                p = getattr(module, role)
                if p is not None and id(p) in by_object:
                    structured[by_object[id(p)]] = (role, True)
    plan = _Plan(list(params), structured, num_outputs, 0, 0)
    if structured:
        features, disagreeing = _structured_features(model, params, plan, x, verify=True)
        for name in disagreeing:
            del plan.structured[name]
        # the pairwise route costs L^2 (K + O C) per pair, per-sample gradients O C K
        window_counts = {term.name: term.inputs.shape[1] for term in features.grams}
        for term_name, (role, _) in list(plan.structured.items()):
            if role != "weight":
                continue
            p = params[term_name]
            fan_out, fan_in, positions = p.shape[0], p[0].numel(), window_counts[term_name]
            pairwise = (
                positions * positions * (fan_in + num_outputs * fan_out) <= num_outputs * fan_out * fan_in
            )
            plan.structured[term_name] = (role, pairwise)
    features, _ = _features(model, params, plan, x)
    plan.feature_numel = max(1, features.numel() // x.shape[0])
    plan.pass_numel = max(1, _activation_numel(model, params, x) // x.shape[0]) * (num_outputs + 1)
    return plan


def _activation_numel(model: nn.Module, params: dict[str, Tensor], x: Tensor) -> int:
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            _flat_output(model, params, x)
    finally:
        for handle in handles:
            handle.remove()
    return total + x.numel()


def _features(model: nn.Module, params: dict[str, Tensor], plan: _Plan, x: Tensor) -> tuple[_Features, set]:
    if plan.structured:
        features, missing = _structured_features(model, params, plan, x)
        if missing:
            # the plan was made on a probe batch; a layer not called for this batch would
            # silently drop its parameters' contribution
            raise RuntimeError(
                f"the layers holding {sorted(missing)} were not called on every batch as on the first "
                "samples (data-dependent control flow?); use implementation='jacobian'"
            )
        return features, missing
    return _Features(_jacobian(model, params, x)), set()


# ---------------------------------------------------------------------------------- contractions


def _contract(f1: _Features, f2: _Features, mode: str) -> Tensor:
    """The kernel block between two chunks: ``(a, b, O, O)``, ``(a, b)`` or ``(a, b, O)``."""
    result = None
    if f1.jacobian is not None:
        j1, j2 = f1.jacobian, f2.jacobian
        a, num_outputs, _ = j1.shape
        b = j2.shape[0]
        if mode == "full":
            result = (
                (j1.reshape(a * num_outputs, -1) @ j2.reshape(b * num_outputs, -1).T)
                .reshape(a, num_outputs, b, num_outputs)
                .permute(0, 2, 1, 3)
            )
        elif mode == "trace":
            result = j1.reshape(a, -1) @ j2.reshape(b, -1).T
        else:
            result = torch.einsum("aop,bop->abo", j1, j2)
    for t1, t2 in zip(f1.grams, f2.grams):
        x1, g1, x2, g2 = t1.inputs, t1.cotangents, t2.inputs, t2.cotangents
        a, num_outputs = g1.shape[:2]
        b = g2.shape[0]
        if x1.shape[1] == 1:
            inputs = x1[:, 0] @ x2[:, 0].T
            if mode == "full":
                cots = g1[:, :, 0].reshape(a * num_outputs, -1) @ g2[:, :, 0].reshape(b * num_outputs, -1).T
                part = (
                    cots.reshape(a, num_outputs, b, num_outputs).permute(0, 2, 1, 3)
                    * inputs[:, :, None, None]
                )
            elif mode == "trace":
                part = (g1[:, :, 0].reshape(a, -1) @ g2[:, :, 0].reshape(b, -1).T) * inputs
            else:
                part = torch.einsum("aoc,boc->abo", g1[:, :, 0], g2[:, :, 0]) * inputs[:, :, None]
        else:
            inputs = torch.einsum("alk,bmk->ablm", x1, x2)
            if mode == "full":
                part = torch.einsum("ablqc,aolc->aboq", torch.einsum("ablm,bqmc->ablqc", inputs, g2), g1)
            elif mode == "trace":
                part = torch.einsum("ablqc,aqlc->ab", torch.einsum("ablm,bqmc->ablqc", inputs, g2), g1)
            else:
                part = torch.einsum("ablqc,aqlc->abq", torch.einsum("ablm,bqmc->ablqc", inputs, g2), g1)
        result = part if result is None else result + part
    if mode == "trace":
        result = (
            result / f1.jacobian.shape[1]
            if f1.jacobian is not None
            else result / f1.grams[0].cotangents.shape[1]
        )
    return result


def _contract_self(f: _Features, mode: str) -> Tensor:
    """Each sample with itself: ``(c, O, O)``, ``(c,)`` or ``(c, O)``."""
    result = None
    if f.jacobian is not None:
        j = f.jacobian
        result = {
            "full": lambda: torch.einsum("aop,aqp->aoq", j, j),
            "trace": lambda: (j * j).sum((1, 2)),
            "diagonal": lambda: (j * j).sum(-1),
        }[mode]()
    for t in f.grams:
        x, g = t.inputs, t.cotangents
        inputs = torch.einsum("alk,amk->alm", x, x)
        inner = torch.einsum("alm,aqmc->alqc", inputs, g)
        part = {
            "full": lambda: torch.einsum("alqc,aolc->aoq", inner, g),
            "trace": lambda: torch.einsum("alqc,aqlc->a", inner, g),
            "diagonal": lambda: torch.einsum("alqc,aqlc->aq", inner, g),
        }[mode]()
        result = part if result is None else result + part
    num_outputs = f.jacobian.shape[1] if f.jacobian is not None else f.grams[0].cotangents.shape[1]
    return result / num_outputs if mode == "trace" else result


# ---------------------------------------------------------------------------------- drivers


def _chunk(plan: _Plan, itemsize: int, chunk_size: int | None, budget: int) -> int:
    if chunk_size is not None:
        return chunk_size
    per_sample = (plan.feature_numel * 2 + plan.pass_numel) * itemsize * _OVERHEAD
    return max(1, budget // per_sample)


def _output_shape(n1: int, n2: int, num_outputs: int, mode: str) -> tuple[int, ...]:
    return {"full": (n1, n2, num_outputs, num_outputs), "trace": (n1, n2), "diagonal": (n1, n2, num_outputs)}[
        mode
    ]


def _transpose_block(block: Tensor, mode: str) -> Tensor:
    if mode == "full":
        return block.permute(1, 0, 3, 2)
    return block.transpose(0, 1)


def _prepare(model, x1, x2, mode, implementation, chunk_size, names=None):
    _check_choice(mode, MODES, "mode")
    _check_choice(implementation, IMPLEMENTATIONS, "implementation")
    _check_positive(chunk_size, "chunk_size")
    params = _trainable(model, names)
    _check_inputs(params, x1, x2)
    _check_mode_of_model(model)
    return params, ("structured" if implementation == "auto" else implementation)


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    mode: str = "full",
    implementation: str = "auto",
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    parameter_names: Sequence[str] | None = None,
) -> Tensor:
    r"""The empirical NTK of ``model`` between ``x1`` ``(n1, *input_shape)`` and ``x2``.

    Args:
        model: any module mapping ``(n, *input_shape)`` to ``(n, *output_shape)``, sample by
            sample (no module in training mode that couples the samples).
        x1, x2: inputs; ``x2=None`` is ``x1`` (only the blocks on and above the diagonal are
            computed).
        mode: ``"full"`` ``(n1, n2, O, O)``; ``"trace"`` ``(n1, n2)``, the mean over the ``O``
            output pairs; ``"diagonal"`` ``(n1, n2, O)``.
        implementation: ``"jacobian"``, ``"ntvp"``, ``"structured"`` or ``"auto"`` (see the
            module docstring); all give the same numbers up to rounding.
        chunk_size: samples per chunk; default: as many as fit in ``memory_budget`` bytes of
            intermediates (the result itself is not counted).
        parameter_names: the parameters to differentiate (default: those requiring grad).

    Returns:
        The kernel in the parameters' dtype, computed without building an autograd graph.
    """
    params, implementation = _prepare(model, x1, x2, mode, implementation, chunk_size, parameter_names)
    with torch.no_grad():
        if implementation == "ntvp":
            return _ntvp(model, params, x1, x2, mode, chunk_size, memory_budget)
        probe = x1[: min(2, x1.shape[0])]
        plan = _make_plan(model, params, probe, implementation)
        return _blocked(model, params, plan, x1, x2, mode, chunk_size, memory_budget)


def _blocked(model, params, plan, x1, x2, mode, chunk_size, memory_budget) -> Tensor:
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    itemsize = x1.element_size()
    chunk = _chunk(plan, itemsize, chunk_size, memory_budget)
    cache_whole = n2 * plan.feature_numel * itemsize <= memory_budget
    result = x1.new_empty(_output_shape(n1, n2, plan.num_outputs, mode))
    starts2 = list(range(0, n2, chunk))
    cache: dict[int, _Features] = {}

    def features2(start: int) -> _Features:
        if start in cache:
            return cache[start]
        f, _ = _features(model, params, plan, x2[start : start + chunk])
        if cache_whole:
            cache[start] = f
        return f

    for start1 in range(0, n1, chunk):
        f1 = (
            features2(start1) if symmetric else _features(model, params, plan, x1[start1 : start1 + chunk])[0]
        )
        stop1 = min(n1, start1 + chunk)
        for start2 in starts2:
            if symmetric and start2 < start1:
                continue
            f2 = f1 if symmetric and start2 == start1 else features2(start2)
            block = _contract(f1, f2, mode)
            if symmetric and start2 == start1:
                # exactly symmetric, whatever order the matrix product summed in
                block = 0.5 * (block + _transpose_block(block, mode))
            stop2 = min(n2, start2 + chunk)
            result[start1:stop1, start2:stop2] = block
            if symmetric and start2 != start1:
                result[start2:stop2, start1:stop1] = _transpose_block(block, mode)
    return result


def empirical_ntk_diagonal(
    model: nn.Module,
    x: Tensor,
    mode: str = "full",
    implementation: str = "auto",
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    parameter_names: Sequence[str] | None = None,
) -> Tensor:
    r""":math:`\Theta(x_i, x_i)` for every sample, in O(n): ``(n, O, O)``, ``(n,)`` or ``(n, O)``."""
    params, implementation = _prepare(model, x, None, mode, implementation, chunk_size, parameter_names)
    if implementation == "ntvp":
        implementation = "jacobian"  # per-sample products of one sample with itself are Jacobian rows
    with torch.no_grad():
        plan = _make_plan(model, params, x[: min(2, x.shape[0])], implementation)
        chunk = _chunk(plan, x.element_size(), chunk_size, memory_budget)
        parts = [
            _contract_self(_features(model, params, plan, x[s : s + chunk])[0], mode)
            for s in range(0, x.shape[0], chunk)
        ]
    return torch.cat(parts)


def _ntvp(model, params, x1, x2, mode, chunk_size, memory_budget) -> Tensor:
    """Columns :math:`J_1 J_2^\\top e_{jq}` by one vjp of a chunk of ``x2`` and vmapped jvps."""
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    with torch.no_grad():
        num_outputs = _flat_output(model, params, x1[:1]).shape[1]
    n1, n2 = x1.shape[0], x2.shape[0]
    itemsize = x1.element_size()
    num_params = sum(p.numel() for p in params.values())
    activations = _activation_numel(model, params, x1[:1])
    if chunk_size is None:
        # each of the c2 * O columns holds a parameter vector and the jvp's activations of c1 rows
        chunk2 = max(1, memory_budget // (2 * _OVERHEAD * num_outputs * num_params * itemsize))
        chunk1 = max(1, memory_budget // (_OVERHEAD * chunk2 * num_outputs * activations * itemsize))
    else:
        chunk1 = chunk2 = chunk_size
    result = x1.new_empty(_output_shape(n1, n2, num_outputs, mode))
    for start2 in range(0, n2, chunk2):
        xb = x2[start2 : start2 + chunk2]
        b = xb.shape[0]
        with torch.enable_grad():
            _, pullback = vjp(lambda p: _flat_output(model, p, xb), params)
        basis = torch.eye(b * num_outputs, dtype=x1.dtype, device=x1.device).reshape(-1, b, num_outputs)
        tangents = vmap(lambda v: pullback(v)[0])(basis)
        for start1 in range(0, n1, chunk1):
            xa = x1[start1 : start1 + chunk1]
            a = xa.shape[0]
            columns = vmap(lambda t: jvp(lambda p: _flat_output(model, p, xa), (params,), (t,))[1])(tangents)
            # columns[(j, q), i, o] = Theta_{io, jq}
            full = columns.reshape(b, num_outputs, a, num_outputs).permute(2, 0, 3, 1)
            block = {
                "full": lambda: full,
                "trace": lambda: torch.diagonal(full, dim1=2, dim2=3).mean(-1),
                "diagonal": lambda: torch.diagonal(full, dim1=2, dim2=3),
            }[mode]()
            result[start1 : start1 + a, start2 : start2 + b] = block
    if symmetric:
        result = 0.5 * (result + _transpose_block(result, mode))
    return result


def empirical_ntk_monte_carlo(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    num_samples: int = 64,
    mode: str = "full",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tensor:
    r"""A random-projection estimate :math:`\frac1S\sum_{s=1}^S (J_1 v_s)(J_2 v_s)^\top`.

    With :math:`v_s \sim \mathcal N(0, I_P)`, :math:`\mathbb E[v v^\top] = I` makes the estimate
    unbiased; each term needs one ``jvp`` per side (no Jacobian, no backward pass), and the
    error of an entry falls as :math:`1/\sqrt S`
    (:math:`\operatorname{Var} = (\Theta_{11}\Theta_{22} + \Theta_{12}^2)/S`).
    ``chunk_size`` bounds the projections pushed through the network at once.
    """
    _check_positive(num_samples, "num_samples")
    params, _ = _prepare(model, x1, x2, mode, "jacobian", chunk_size)
    x2_ = x1 if x2 is None else x2
    num_params = sum(p.numel() for p in params.values())
    itemsize = x1.element_size()
    activations = _activation_numel(model, params, x1[:1]) * (x1.shape[0] + x2_.shape[0])
    step = chunk_size or max(1, memory_budget // (_OVERHEAD * (num_params + activations) * itemsize))
    total = None
    with torch.no_grad():
        for start in range(0, num_samples, step):
            s = min(step, num_samples - start)
            tangents = {
                name: torch.randn((s, *p.shape), generator=generator, dtype=p.dtype, device=p.device)
                for name, p in params.items()
            }

            def project(x: Tensor) -> Tensor:
                return vmap(lambda t: jvp(lambda p: _flat_output(model, p, x), (params,), (t,))[1])(tangents)

            p1 = project(x1)
            p2 = p1 if x2 is None else project(x2)
            part = {
                "full": lambda: torch.einsum("sao,sbq->aboq", p1, p2),
                "trace": lambda: torch.einsum("sao,sbo->ab", p1, p2) / p1.shape[-1],
                "diagonal": lambda: torch.einsum("sao,sbo->abo", p1, p2),
            }[mode]()
            total = part if total is None else total + part
    return total / num_samples


# ---------------------------------------------------------------------------------- linearisation


class LinearizedNetwork(nn.Module):
    r"""The first-order Taylor expansion of a network around its current parameters.

    .. math:: f^{\text{lin}}_\theta(x) = f_{\theta_0}(x) + J_{\theta_0}(x)\,(\theta - \theta_0)

    :math:`\theta_0` is a frozen copy of ``model``'s trainable parameters at construction;
    :math:`\theta` (``self.params``, starting at :math:`\theta_0`) is what an optimiser trains.
    The product :math:`J(\theta - \theta_0)` is one forward-mode ``jvp``: no Jacobian is formed.
    Gradient descent on a squared loss of this model follows the NTK dynamics of
    :math:`\Theta_{\theta_0}` exactly [Lee2019]_.

    .. [Lee2019] J. Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under
        Gradient Descent. NeurIPS 2019.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_mode_of_model(model)
        params = _trainable(model)
        self.names = list(params)
        self.network = copy.deepcopy(model)
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.params = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in params.values()])

    def _origin(self) -> dict[str, Tensor]:
        found = dict(self.network.named_parameters())
        return {name: found[name] for name in self.names}

    def forward(self, x: Tensor) -> Tensor:
        origin = self._origin()
        shifts = {name: p - origin[name] for name, p in zip(self.names, self.params)}
        out, tangent = jvp(lambda p: functional_call(self.network, p, (x,)), (origin,), (shifts,))
        return out + tangent


def linearize(model: nn.Module) -> LinearizedNetwork:
    """``model`` linearised in its trainable parameters around their current values (see :class:`LinearizedNetwork`)."""
    return LinearizedNetwork(model)


# ---------------------------------------------------------------------------------- GPyTorch kernel


def _pack(features: _Features) -> tuple[Tensor, list[tuple[int, ...]]]:
    """Features as one ``(c, k)`` tensor (sliced with the points) and the per-sample shapes."""
    parts = [features.jacobian] if features.jacobian is not None else []
    for term in features.grams:
        parts += [term.inputs, term.cotangents]
    c = features.num_samples
    return torch.cat([p.reshape(c, -1) for p in parts], 1), [tuple(p.shape[1:]) for p in parts]


def _unpack(stats: Tensor, layout: list[tuple[int, ...]], has_jacobian: bool) -> _Features:
    c, parts, start = stats.shape[0], [], 0
    for shape in layout:
        size = math.prod(shape)
        parts.append(stats[:, start : start + size].reshape(c, *shape))
        start += size
    jacobian = parts.pop(0) if has_jacobian else None
    grams = [_GramTerm("", parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
    return _Features(jacobian, grams)


class _EmpiricalFunctions:
    """``covar_func`` of :class:`~gp_ntk.engine.lazy.BlockedKernelLinearOperator` for the trace kernel.

    A side's per-point statistics are its packed features (Jacobian rows, layer inputs and
    output cotangents) when they fit in the memory budget, so blocks only contract; otherwise
    blocks recompute the features of their points.
    """

    def __init__(self, kernel: EmpiricalNTKKernel) -> None:
        self.kernel = kernel
        self.layout: list[tuple[int, ...]] | None = None
        self.has_jacobian = False

    def __call__(self, x1: Tensor, x2: Tensor, diag: bool = False, **unused) -> Tensor:
        if diag:
            return self.kernel._diagonal(x1)
        return self.kernel._dense(x1, x2)

    def side(self, x: Tensor, **unused) -> Side:
        kernel = self.kernel
        params, plan = kernel._plan_for(x)
        if (
            kernel.implementation == "ntvp"
            or plan.feature_numel * x.shape[0] * x.element_size() > kernel.memory_budget
        ):
            return Side(x, x.new_zeros(x.shape[0], 0), ())
        chunk = _chunk(plan, x.element_size(), kernel.chunk_size, kernel.memory_budget)
        shaped = kernel._shaped(x)
        with torch.no_grad():
            packed = []
            for start in range(0, x.shape[0], chunk):
                features, _ = _features(kernel.network, params, plan, shaped[start : start + chunk])
                stats, self.layout = _pack(features)
                self.has_jacobian = features.jacobian is not None
                packed.append(stats)
        return Side(x, torch.cat(packed), ())

    def block(self, side1: Side, side2: Side, compiled: bool, **unused) -> Tensor:
        if side1.stats.shape[-1] > 0 and side2.stats.shape[-1] > 0:
            f1 = _unpack(side1.stats, self.layout, self.has_jacobian)
            f2 = _unpack(side2.stats, self.layout, self.has_jacobian)
            return _contract(f1, f2, "trace")
        return self.kernel._dense(side1.points, side2.points)


def _same(a: Tensor, b: Tensor) -> bool:
    return a is b or (
        a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))
    )


class EmpiricalNTKKernel(gpytorch.kernels.Kernel):
    r"""The empirical NTK of a frozen copy of a network, as a GPyTorch kernel.

    Args:
        model: the network (in eval mode); a deep copy of it is taken and frozen, so training the
            original (or the GP's hyperparameters) does not change this kernel.
        mode: ``"trace"`` (one output per input, :math:`\frac1O\sum_o\Theta_{io,jo}`) or ``"full"``
            (``O`` outputs per input, interleaved rows ``i * O + o`` as GPyTorch's multitask kernels).
        input_shape: the shape of one network input; GPyTorch passes ``(n, d)`` rows, which are
            reshaped to ``(n, *input_shape)`` (e.g. ``(1, 28, 28)`` images flattened to 784).
        implementation, chunk_size, memory_budget: as for :func:`empirical_ntk`.

    ``k(X, X, diag=True)`` costs O(n) per-sample self-products. A ``"trace"`` kernel larger than
    :class:`gp_ntk.settings.lazy_evaluation`'s threshold is returned as a
    :class:`~gp_ntk.engine.lazy.BlockedKernelLinearOperator` (products in row blocks, memory linear in n).

    To use the tangent kernel of the network after more training, call :meth:`refresh` with the
    trained network (or build a new kernel): the copy is replaced and cached operators are not
    reused. The kernel has no hyperparameters of its own; wrap it in
    :class:`~gpytorch.kernels.ScaleKernel` for an output scale.
    """

    has_lengthscale = False

    def __init__(
        self,
        model: nn.Module,
        mode: str = "trace",
        input_shape: Sequence[int] | None = None,
        implementation: str = "auto",
        chunk_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = _check_choice(mode, ("trace", "full"), "mode")
        self.implementation = _check_choice(implementation, IMPLEMENTATIONS, "implementation")
        _check_positive(chunk_size, "chunk_size")
        self.chunk_size, self.memory_budget = chunk_size, int(memory_budget)
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.refresh(model)

    def refresh(self, model: nn.Module) -> None:
        """Replace the frozen network by a copy of ``model`` (e.g. after training it)."""
        _check_mode_of_model(model)
        names = list(_trainable(model))
        network = copy.deepcopy(model)
        for p in network.parameters():
            p.requires_grad_(False)
        self.network, self.parameter_names = network, names
        self._plans: dict = {}
        self._last: tuple[Tensor, Tensor, Tensor] | None = None
        self.num_outputs = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_plans"], state["_last"] = {}, None
        return state

    def _shaped(self, x: Tensor) -> Tensor:
        if self.input_shape is None:
            return x
        if x.shape[-1] != math.prod(self.input_shape):
            raise ValueError(
                f"inputs must have {math.prod(self.input_shape)} features (input_shape={self.input_shape}), "
                f"got {x.shape[-1]}"
            )
        return x.reshape(x.shape[0], *self.input_shape)

    def _plan_for(self, x: Tensor) -> tuple[dict[str, Tensor], _Plan]:
        params = _trainable(self.network, self.parameter_names)
        key = (x.dtype, x.device)
        if key not in self._plans:
            implementation = "structured" if self.implementation in ("auto", "ntvp") else self.implementation
            with torch.no_grad():
                self._plans[key] = _make_plan(self.network, params, self._shaped(x[:2]), implementation)
        plan = self._plans[key]
        self.num_outputs = plan.num_outputs
        return params, plan

    def _dense(self, x1: Tensor, x2: Tensor) -> Tensor:
        # the network is frozen, so the matrix of the inputs seen last (each optimisation step of
        # a GP asks for k(X, X) again) is reused; comparing the inputs costs O(n d)
        last = self._last
        if last is not None and _same(last[0], x1) and _same(last[1], x2):
            return last[2]
        k = self._evaluate(x1, x2)
        self._last = (x1.detach().clone(), x2.detach().clone(), k)
        return k

    def _evaluate(self, x1: Tensor, x2: Tensor) -> Tensor:
        same = _same(x1, x2)
        k = empirical_ntk(
            self.network,
            self._shaped(x1),
            None if same else self._shaped(x2),
            mode=self.mode,
            implementation=self.implementation,
            chunk_size=self.chunk_size,
            memory_budget=self.memory_budget,
            parameter_names=self.parameter_names,
        )
        if self.mode == "full":
            n1, n2, num_outputs = k.shape[0], k.shape[1], k.shape[2]
            k = k.permute(0, 2, 1, 3).reshape(n1 * num_outputs, n2 * num_outputs)
        return k

    def _diagonal(self, x: Tensor) -> Tensor:
        d = empirical_ntk_diagonal(
            self.network,
            self._shaped(x),
            mode="trace" if self.mode == "trace" else "diagonal",
            implementation=self.implementation,
            chunk_size=self.chunk_size,
            memory_budget=self.memory_budget,
            parameter_names=self.parameter_names,
        )
        return d.reshape(-1)

    def num_outputs_per_input(self, x1: Tensor, x2: Tensor) -> int:
        if self.mode == "trace":
            return 1
        if self.num_outputs is None:
            self._plan_for(x1)
        return self.num_outputs

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError("EmpiricalNTKKernel does not support last_dim_is_batch=True")
        if x1.dim() != 2 or x2.dim() != 2:
            raise ValueError(
                f"EmpiricalNTKKernel takes (n, d) inputs without batch dimensions, got {tuple(x1.shape)} "
                f"and {tuple(x2.shape)}"
            )
        if diag:
            return self._diagonal(x1)
        if self.mode == "trace" and settings.lazy_evaluation.applies(x1.shape[-2], x2.shape[-2]):
            return BlockedKernelLinearOperator(x1, x2, covar_func=_EmpiricalFunctions(self))
        return self._dense(x1, x2)
