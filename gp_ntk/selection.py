"""Model selection: compare kernels (depths, activations, NNGP vs NTK, baselines) by evidence.

The log marginal likelihood :math:`\\log p(y \\mid X, \\hat\\theta)` at fitted hyperparameters
is what a GP user compares before trusting a kernel: it trades data fit against complexity
without a validation split. :func:`compare_kernels` fits one :class:`~gp_ntk.models.ExactGPModel`
per candidate and returns the rows sorted best first; :func:`kernel_grid` builds the usual
candidate set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gpytorch.kernels import Kernel
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor

from .fitting import FitError, fit, wants_progress
from .models import _KERNEL_NAMES, ExactGPModel, check_training_data, make_kernel

__all__ = ["ComparisonRow", "compare_kernels", "default_candidates", "format_table", "kernel_grid"]

# What one candidate's evaluation can raise without the comparison being wrong: a fit that
# gave up, a kernel that overflows (FloatingPointError) or is refused at these inputs
# (ValueError), a failed factorisation (NotPSDError, LinAlgError, other RuntimeErrors). Anything
# else (a TypeError, KeyboardInterrupt) is a bug or the user's, and propagates.
_CANDIDATE_FAILURES = (FitError, ArithmeticError, ValueError, NotPSDError, NanError, RuntimeError)


@dataclass
class ComparisonRow:
    """One candidate: total log marginal likelihood at the fitted hyperparameters, and cost."""

    name: str
    log_marginal_likelihood: float
    per_point: float
    num_hyperparameters: int
    iterations: int
    seconds: float
    status: str
    model: ExactGPModel | None = None
    error: str | None = None


def kernel_grid(
    depths: Iterable[int] = (1, 2, 3, 5),
    activations: Iterable[str] = ("relu", "erf"),
    kinds: Iterable[str] = ("nngp", "ntk"),
    baselines: Iterable[str] = ("rbf", "matern52"),
    **kernel_kwargs,
) -> dict[str, str | Kernel]:
    """Candidates named like ``"ntk-relu-d3"``, plus baseline kernel names (fresh kernels each call)."""
    grid: dict[str, str | Kernel] = {}
    for kind in kinds:
        for activation in activations:
            for depth in depths:
                grid[f"{kind}-{activation}-d{depth}"] = make_kernel(
                    kind, depth=depth, activation=activation, **kernel_kwargs
                )
    for name in baselines:
        grid[name] = name
    return grid


def default_candidates() -> dict[str, str | Kernel]:
    """The default comparison: five candidates that answer "network kernel or not, which one".

    The depth-2 ReLU and erf NNGPs (the smooth network kernels), the depth-2 ReLU NTK (the
    trained-network prior, with its cusp at x = y) and the RBF and Matern-5/2 baselines. Depth
    moves the evidence far less than the kernel family does; ``kernels="full"`` compares
    :func:`kernel_grid`'s 18 candidates (depths 1, 2, 3, 5 of both families and activations).
    """
    grid = kernel_grid(depths=(2,), activations=("relu", "erf"), kinds=("nngp",), baselines=())
    grid["ntk-relu-d2"] = make_kernel("ntk", depth=2, activation="relu")
    grid.update({"rbf": "rbf", "matern52": "matern52"})
    return grid


def compare_kernels(
    train_x: Tensor,
    train_y: Tensor,
    kernels: Mapping[str, Kernel | str] | str | None = None,
    keep_models: bool = False,
    progress: bool | None = None,
    **fit_kwargs,
) -> list[ComparisonRow]:
    """Fit an exact GP per kernel and rank them by log marginal likelihood (best first).

    Args:
        train_x, train_y: training data, as for :class:`~gp_ntk.models.ExactGPModel`.
        kernels: name -> kernel (or kernel name); default :func:`default_candidates` (5
            candidates), ``"full"`` for :func:`kernel_grid`'s 18.
        keep_models: keep each fitted model in its row (``row.model``).
        progress: print one line per candidate as it finishes; default: when standard error is
            a terminal.
        **fit_kwargs: passed to :func:`gp_ntk.fit` (``max_iter``, ``lr``, ``optimizer`` ...);
            default L-BFGS (up to 20 iterations, patience 3): evidence is compared at converged
            hyperparameters, which L-BFGS reaches in a few iterations for every candidate.

    A candidate that cannot be evaluated (its fit gives up with
    :class:`~gp_ntk.fitting.FitError`, its kernel overflows or is refused at these inputs, a
    factorisation fails) is kept with ``log_marginal_likelihood = -inf``, ``status="failed"``
    and the reason in ``row.error``, rather than stopping the rest. Bad data, arguments or
    candidates (neither a kernel nor a known name) are refused before any fit. Ctrl-C stops
    the comparison (``KeyboardInterrupt``, with the rows finished so far as its ``rows``).
    """
    if kernels is None:
        kernels = default_candidates()
    elif isinstance(kernels, str):
        if kernels != "full":
            raise ValueError(f'kernels must be a mapping, None (the default five) or "full", got {kernels!r}')
        kernels = kernel_grid()
    if not isinstance(kernels, Mapping) or not kernels:
        raise ValueError("kernels must be a non-empty mapping of candidate name -> kernel or kernel name")
    for name, kernel in kernels.items():
        known = isinstance(kernel, str) and kernel.lower() in _KERNEL_NAMES
        if not (known or isinstance(kernel, Kernel)):
            raise ValueError(
                f"candidate {name!r} must be a gpytorch Kernel or a name in {_KERNEL_NAMES}, got {kernel!r}"
            )
    train_x, train_y = check_training_data(train_x, train_y)
    progress = wants_progress(progress)
    fit_kwargs.setdefault("progress", False)
    if "optimizer" not in fit_kwargs:
        # each of fit's L-BFGS iterations is up to 20 inner steps with a line search, so a few
        # outer iterations without progress mean converged; a longer patience only walks along
        # the flat ridge where weight_variance and the outputscale trade off (measured, N = 200:
        # the depth-2 ReLU NNGP took 678 kernel evaluations with patience 20, same evidence)
        fit_kwargs["optimizer"] = "lbfgs"
        fit_kwargs.setdefault("max_iter", 20)
        fit_kwargs.setdefault("patience", 3)
    rows = []
    for name, kernel in kernels.items():
        start = time.perf_counter()
        n = train_y.shape[0]
        model, error = None, None
        try:
            model = ExactGPModel(train_x, train_y, kernel=kernel)
            result = fit(model, **fit_kwargs)
            per_point, status, iterations = -result.best_loss, result.status, result.iterations
        except _CANDIDATE_FAILURES as failure:
            partial = getattr(failure, "result", None)
            iterations = partial.iterations if partial is not None else 0
            per_point, status, error = -math.inf, "failed", f"{type(failure).__name__}: {failure}"
        parameters = [] if model is None else [p for p in model.parameters() if p.requires_grad]
        row = ComparisonRow(
            name=name,
            log_marginal_likelihood=per_point * n,
            per_point=per_point,
            num_hyperparameters=sum(p.numel() for p in parameters),
            iterations=iterations,
            seconds=time.perf_counter() - start,
            status=status,
            model=model if keep_models else None,
            error=error,
        )
        rows.append(row)
        if status == "interrupted":
            # fit keeps the best parameters on Ctrl-C; the comparison itself stops here
            interrupt = KeyboardInterrupt()
            interrupt.rows = sorted(rows, key=lambda r: r.log_marginal_likelihood, reverse=True)
            raise interrupt
        if progress:
            outcome = f"failed ({error[:120]})" if error else f"log ML {row.log_marginal_likelihood:12.3f}"
            print(f"  {name:<22} {outcome}  ({row.seconds:.1f} s)", flush=True)
    return sorted(rows, key=lambda r: r.log_marginal_likelihood, reverse=True)


def format_table(rows: list[ComparisonRow]) -> str:
    """A plain-text table of :func:`compare_kernels` rows, with the evidence gap to the best."""
    best = rows[0].log_marginal_likelihood if rows else 0.0
    lines = [
        f"{'kernel':<22} {'log ML':>12} {'per point':>10} {'vs best':>10} {'params':>7} {'iters':>6} {'time s':>7}  status",
        "-" * 90,
    ]
    for r in rows:
        lines.append(
            f"{r.name:<22} {r.log_marginal_likelihood:12.3f} {r.per_point:10.4f} "
            f"{r.log_marginal_likelihood - best:10.3f} {r.num_hyperparameters:7d} {r.iterations:6d} "
            f"{r.seconds:7.1f}  {r.status}"
        )
    return "\n".join(lines)
