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

__all__ = ["ComparisonRow", "compare_kernels", "format_table", "kernel_grid"]

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


def compare_kernels(
    train_x: Tensor,
    train_y: Tensor,
    kernels: Mapping[str, Kernel | str] | None = None,
    keep_models: bool = False,
    progress: bool | None = None,
    **fit_kwargs,
) -> list[ComparisonRow]:
    """Fit an exact GP per kernel and rank them by log marginal likelihood (best first).

    Args:
        train_x, train_y: training data, as for :class:`~gp_ntk.models.ExactGPModel`.
        kernels: name -> kernel (or kernel name); default :func:`kernel_grid`'s.
        keep_models: keep each fitted model in its row (``row.model``).
        progress: print one line per candidate as it finishes; default: when standard error is
            a terminal.
        **fit_kwargs: passed to :func:`gp_ntk.fit` (``max_iter``, ``lr``, ``optimizer`` ...).

    A candidate that cannot be evaluated (its fit gives up with
    :class:`~gp_ntk.fitting.FitError`, its kernel overflows or is refused at these inputs, a
    factorisation fails) is kept with ``log_marginal_likelihood = -inf``, ``status="failed"``
    and the reason in ``row.error``, rather than stopping the rest. Bad data, arguments or
    candidates (neither a kernel nor a known name) are refused before any fit. Ctrl-C stops
    the comparison (``KeyboardInterrupt``, with the rows finished so far as its ``rows``).
    """
    kernels = kernel_grid() if kernels is None else kernels
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
