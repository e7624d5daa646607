r"""Fitting a BoTorch surrogate that may fail numerically: :func:`~gp_ntk.bo.fit_bo_model`.

BoTorch's ``fit_gpytorch_mll`` restarts from prior samples when its optimiser warns (its own
retry machinery, used as it is). What it does not do is raise the Cholesky jitter when every
attempt fails to factorise the kernel matrix, which network kernels on clustered BO designs do;
:func:`~gp_ntk.bo.fit_bo_model` adds that one policy (:func:`gp_ntk.settings.cholesky_jitter`) and keeps
the model in a known state whatever happens.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gpytorch
import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models.model import Model
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.errors import NanError, NotPSDError

from ..settings import JITTER_DOUBLE, cholesky_jitter
from ..validation import check_int, check_number

__all__ = ["FitReport", "NUMERICAL_FAILURES", "fit_bo_model", "warm_start"]

# Exceptions that mean "this surrogate could not be fitted / queried this time", as opposed to
# programming errors (TypeError, AttributeError, ...), which propagate. torch.distributions
# raises ValueError on NaN parameters; linear algebra failures are RuntimeErrors.
NUMERICAL_FAILURES = (ModelFittingError, NotPSDError, NanError, ArithmeticError, RuntimeError, ValueError)


@dataclass
class FitReport:
    """Outcome of :func:`~gp_ntk.bo.fit_bo_model`: attempts made, the jitter that worked, messages."""

    succeeded: bool
    attempts: int
    jitter: float
    seconds: float
    messages: list[str] = field(default_factory=list)

    def jitter_context(self) -> gpytorch.settings.cholesky_jitter:
        """The Cholesky jitter the fit succeeded under, to query the model with."""
        return cholesky_jitter(self.jitter / JITTER_DOUBLE)


def fit_bo_model(
    model: Model,
    *,
    max_attempts: int = 3,
    initial_jitter: float = 1e-8,
    fit: Callable[..., Any] | None = None,
) -> FitReport:
    r"""Fit ``model`` by ``fit_gpytorch_mll``; on failure retry from its initial state with 100x jitter.

    BoTorch's ``fit_gpytorch_mll`` already restarts from prior samples when the optimiser
    warns. This adds what it does not do: when it raises (every attempt failed, a Cholesky
    factorisation failed, a kernel overflowed) or leaves non-finite parameters, the model is
    reset to the state it had on entry and fitted again under
    a Cholesky jitter 100 times larger (``1e-8``, ``1e-6``, ``1e-4`` in float64, 100 times
    that in float32: :func:`gp_ntk.settings.cholesky_jitter`, the jitter policy of gp_ntk). After ``max_attempts`` failures the model is left in its initial state (prior
    hyperparameters) and ``succeeded`` is ``False``; nothing is raised. Any other exception
    (a ``TypeError`` in ``fit``, Ctrl-C) also restores the initial state, then propagates.

    Query a model fitted with a larger jitter under the same jitter
    (``with report.jitter_context():``), as :func:`~gp_ntk.bo.run_bo` does.

    Args:
        model: a BoTorch GPyTorch model with a ``likelihood``.
        max_attempts: fits to try (at least 1).
        initial_jitter: float64 Cholesky jitter of the first attempt (float32 gets 100 times more).
        fit: the fitting function, default ``botorch.fit.fit_gpytorch_mll`` (taking the mll).
    """
    check_int(max_attempts, "max_attempts")
    check_number(initial_jitter, "initial_jitter", minimum=0, strict_minimum=True)
    fit = fit_gpytorch_mll if fit is None else fit
    start = time.perf_counter()
    initial_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    initial_training = model.training
    messages: list[str] = []
    jitter = float(initial_jitter)
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            model.load_state_dict(initial_state)
        try:
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            with cholesky_jitter(jitter / JITTER_DOUBLE), warnings.catch_warnings():
                # the retry policy is ours: BoTorch's per-attempt warnings are summarised in messages
                warnings.simplefilter("ignore")
                fit(mll)
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise NanError("the fit left non-finite hyperparameters")
        except NUMERICAL_FAILURES as error:
            messages.append(
                f"attempt {attempt} (jitter {jitter:.0e}): {type(error).__name__}: {str(error)[:200]}"
            )
            jitter *= 100.0
            continue
        except BaseException:
            # a programming error or Ctrl-C: nothing half-fitted is left behind
            model.load_state_dict(initial_state)
            model.train(initial_training)
            raise
        model.eval()
        return FitReport(True, attempt, jitter, time.perf_counter() - start, messages)
    model.load_state_dict(initial_state)
    model.eval()
    return FitReport(False, max_attempts, jitter / 100.0, time.perf_counter() - start, messages)


def warm_start(model: Model, previous: Model | None) -> int:
    r"""Start ``model``'s hyperparameters at ``previous``'s fitted values; the number of tensors copied.

    Between two BO iterations the data grow by a few points and the fitted hyperparameters
    move little, so the next fit started at the last optimum needs a fraction of the
    optimiser's iterations a fit from the prior's initial values needs (measured on
    ``make_bo_model``'s default at d = 10: 32-103 marginal-likelihood evaluations instead of
    120-183 at N = 10-20, the same optimum to 1e-4; docs/bo.md). :func:`~gp_ntk.bo.run_bo`
    does this each iteration (``warm_start=True``).

    Every parameter of ``model`` whose name and shape ``previous`` shares is copied (raw
    values, so constraints are respected by construction); buffers that depend on the data,
    such as an input or outcome transform's statistics, are not. Parameters without a
    counterpart keep their values. ``previous=None`` copies nothing.

    Args:
        model: the freshly built model, before fitting.
        previous: a model of the same construction fitted on earlier data, or ``None``.
    """
    if previous is None:
        return 0
    if not isinstance(model, torch.nn.Module) or not isinstance(previous, torch.nn.Module):
        raise ValueError(
            f"model and previous must be torch modules, got {type(model).__name__} and {type(previous).__name__}"
        )
    source = dict(previous.named_parameters())
    pairs = [
        (target, source[name])
        for name, target in model.named_parameters()
        if name in source and source[name].shape == target.shape
    ]
    if not all(bool(torch.isfinite(value).all()) for _, value in pairs):
        return 0
    with torch.no_grad():
        for target, value in pairs:
            target.copy_(value.to(target))
    return len(pairs)
