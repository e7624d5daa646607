"""Marginal-likelihood fitting with progress, early stopping, fault recovery and a history.

:func:`fit` trains any GPyTorch ``ExactGP`` (exact marginal log likelihood, full batch) or
``ApproximateGP`` (``VariationalELBO`` on minibatches), including the models of
:mod:`gp_ntk.models` and BoTorch's ``SingleTaskGP``. It is a convenience: the kernels need
nothing from it, and BoTorch's ``fit_gpytorch_mll`` works on the same models.

Guarantees:

* the model ends with the **best parameters seen** (lowest loss), also when the fit is
  interrupted with Ctrl-C (``status="interrupted"``) or gives up after repeated faults;
* a step whose loss or gradients are NaN/inf, whose kernel overflows (``FloatingPointError``
  from a gp_ntk kernel) or whose Cholesky factorisation fails is undone: the best parameters
  are restored, the Cholesky jitter (:func:`gp_ntk.settings.cholesky_jitter`) is multiplied by
  10 and the learning rate halved, and the
  step is retried; after ``max_recoveries`` such faults :class:`FitError` is raised (the model
  keeps the best parameters, the error carries the :class:`FitResult` as ``error.result``).
  Each recovery is listed in ``FitResult.recoveries``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gpytorch
import torch
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor

from .models import check_training_data
from .settings import cholesky_jitter
from .validation import check_int, check_number

__all__ = ["FitError", "FitResult", "fit"]

_OPTIMIZERS = ("adam", "lbfgs")


class FitError(RuntimeError):
    """A fit that kept failing; the model holds the best parameters found before.

    ``error.result`` is the :class:`FitResult` of the failed fit (losses, best loss,
    recoveries), with ``status="failed"``.
    """

    def __init__(self, message: str, result: FitResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class _NonFinite(ArithmeticError):
    pass


@dataclass
class FitResult:
    """History of a fit.

    ``losses[i]`` is the loss at iteration ``i``: the negative marginal log likelihood per
    training point (exact GPs) or the mean negative ELBO per point over one epoch
    (variational GPs). The model is left at ``best_iteration``'s parameters. ``status`` is
    ``"converged"`` (no improvement for ``patience`` iterations), ``"max_iter"``,
    ``"interrupted"`` (Ctrl-C) or ``"failed"`` (the result of a :class:`FitError`).
    """

    losses: list[float] = field(default_factory=list)
    best_loss: float = math.inf
    best_iteration: int = -1
    status: str = "max_iter"
    seconds: float = 0.0
    recoveries: list[str] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.losses)

    def __str__(self) -> str:
        return (
            f"FitResult(status={self.status!r}, iterations={self.iterations}, best_loss={self.best_loss:.5g} "
            f"at {self.best_iteration}, {self.seconds:.1f} s, recoveries={len(self.recoveries)})"
        )


def wants_progress(progress: bool | None) -> bool:
    """``progress`` resolved: ``None`` (the default of every loop in gp_ntk) means "on a terminal".

    Bars and per-step lines are for people watching; in logs, CI and batch jobs (standard error
    not a terminal) they would only add noise, so there they appear only when asked for.
    """
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True, False or None (on a terminal), got {progress!r}")
    return progress


def _progress(total: int, enabled: bool, description: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a missing one must not stop a fit
        return None
    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)


def _finite_gradients(parameters: list[Tensor]) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in parameters)


def _finite_parameters(parameters: list[Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in parameters)


# Faults a step recovers from. A gp_ntk kernel that overflows raises FloatingPointError (an
# ArithmeticError, as is _NonFinite); a failed torch factorisation raises LinAlgError.
_RECOVERABLE = (ArithmeticError, NotPSDError, NanError, torch.linalg.LinAlgError)


def fit(
    model: gpytorch.models.GP,
    *,
    optimizer: str = "adam",
    max_iter: int | None = None,
    lr: float | None = None,
    patience: int = 20,
    min_delta: float = 1e-4,
    batch_size: int = 256,
    train_x: Tensor | None = None,
    train_y: Tensor | None = None,
    max_recoveries: int = 5,
    progress: bool | None = None,
    callback: Callable[[int, float], None] | None = None,
    seed: int = 0,
) -> FitResult:
    """Fit a GP's hyperparameters (and variational parameters) by its marginal likelihood.

    Args:
        model: an ``ExactGP`` (with ``model.likelihood``) or an ``ApproximateGP`` with a
            ``likelihood`` attribute (as :class:`gp_ntk.models.VariationalGPModel` has).
        optimizer: ``"adam"`` (default) or ``"lbfgs"`` (full-batch, strong-Wolfe line search;
            exact GPs only).
        max_iter: iterations (exact) or epochs (variational); default 300 for Adam, 50 for
            L-BFGS, 100 epochs for variational GPs.
        lr: learning rate; default 0.05 for Adam, 1.0 for L-BFGS.
        patience: stop after this many iterations without improving the best loss by
            ``min_delta`` (``status="converged"``).
        min_delta: the smallest decrease of the best loss (per training point) that counts as
            an improvement; a finite number >= 0.
        batch_size: minibatch size of variational training.
        train_x, train_y: variational training data, default ``model.train_x``/``model.train_y``.
        max_recoveries: faults (non-finite loss/gradients, kernel overflow, failed Cholesky)
            tolerated before :class:`FitError`; 0 raises at the first.
        progress: show a tqdm progress bar with the current loss; default: when standard error is
            a terminal.
        callback: called as ``callback(iteration, loss)`` after each iteration.
        seed: seed of the minibatch order.

    Returns:
        :class:`FitResult`; the model is left in train mode at the best parameters seen.
    """
    if not isinstance(optimizer, str) or optimizer.lower() not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    optimizer = optimizer.lower()
    for name, value in (("patience", patience), ("batch_size", batch_size), ("max_iter", max_iter)):
        if value is not None:
            check_int(value, name)
    check_int(max_recoveries, "max_recoveries", minimum=0)
    check_int(seed, "seed", minimum=None)
    if lr is not None:
        check_number(lr, "lr", minimum=0, strict_minimum=True)
    # NaN would make every comparison false (never an improvement) and inf no step an improvement
    check_number(min_delta, "min_delta", minimum=0)
    progress = wants_progress(progress)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")
    likelihood = getattr(model, "likelihood", None)
    if not isinstance(likelihood, gpytorch.likelihoods.Likelihood):
        raise ValueError("model must have a gpytorch likelihood as model.likelihood")

    if isinstance(model, gpytorch.models.ExactGP):
        run = _ExactRun(model)
        default_iter = 300 if optimizer == "adam" else 50
    elif isinstance(model, gpytorch.models.ApproximateGP):
        if optimizer != "adam":
            raise ValueError("variational GPs train on minibatches: use optimizer='adam'")
        run = _VariationalRun(model, train_x, train_y, batch_size, seed)
        default_iter = 100
    else:
        raise ValueError(f"model must be a gpytorch ExactGP or ApproximateGP, got {type(model).__name__}")
    max_iter = default_iter if max_iter is None else max_iter
    lr = (0.05 if optimizer == "adam" else 1.0) if lr is None else float(lr)

    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("model has no trainable parameters")
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    jitter_level = 0
    since_best = 0
    start = time.perf_counter()
    bar = _progress(max_iter, progress, f"fit {type(model).__name__}")

    def make_optimizer(rate: float) -> torch.optim.Optimizer:
        if optimizer == "adam":
            return torch.optim.Adam(parameters, lr=rate)
        return torch.optim.LBFGS(parameters, lr=rate, max_iter=20, line_search_fn="strong_wolfe")

    opt = make_optimizer(lr)
    model.train()
    likelihood.train()
    try:
        while result.iterations < max_iter:
            iteration = result.iterations
            try:
                with cholesky_jitter(10.0**jitter_level):
                    state = None if run.loss_after_step else copy.deepcopy(model.state_dict())
                    loss = run.step(opt, parameters, optimizer == "lbfgs")
                if run.loss_after_step:
                    state = copy.deepcopy(model.state_dict())
                if not _finite_parameters(parameters):
                    raise _NonFinite("parameters became non-finite after the step")
            except _RECOVERABLE as fault:
                if len(result.recoveries) >= max_recoveries:
                    model.load_state_dict(best_state)
                    result.status = "failed"
                    result.seconds = time.perf_counter() - start
                    raise FitError(
                        f"fit failed {len(result.recoveries) + 1} times (last: {type(fault).__name__}: "
                        f"{fault}); the model holds the best parameters found (loss {result.best_loss:.5g}). "
                        "Try float64, a smaller lr, priors on the variances, or a larger noise constraint.",
                        result,
                    ) from fault
                model.load_state_dict(best_state)
                jitter_level += 1
                lr *= 0.5
                opt = make_optimizer(lr)
                result.recoveries.append(
                    f"iteration {iteration}: {type(fault).__name__}: {fault}; restored the best parameters, "
                    f"jitter x{10**jitter_level:g}, lr {lr:.3g}"
                )
                continue
            result.losses.append(loss)
            if loss < result.best_loss - min_delta:
                result.best_loss, result.best_iteration, since_best = loss, iteration, 0
                best_state = state
            else:
                since_best += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", best=f"{result.best_loss:.4g}")
            if callback is not None:
                callback(iteration, loss)
            if since_best >= patience:
                result.status = "converged"
                break
    except KeyboardInterrupt:
        result.status = "interrupted"
    finally:
        if bar is not None:
            bar.close()
        model.load_state_dict(best_state)
        result.seconds = time.perf_counter() - start
    return result


class _ExactRun:
    # the loss is that of the parameters before the step
    loss_after_step = False

    def __init__(self, model: gpytorch.models.ExactGP) -> None:
        if model.train_inputs is None or model.train_targets is None:
            raise ValueError("the exact GP has no training data (set_train_data first)")
        inputs = model.train_inputs[0]
        check_training_data(inputs.reshape(-1, inputs.shape[-1]), None)
        targets = model.train_targets
        if not bool(torch.isfinite(targets).all()):
            raise ValueError("train_y contains NaN or infinite values; remove those rows first")
        if inputs.shape[-2] < 2:
            raise ValueError(
                f"fitting hyperparameters needs at least 2 training points, got {inputs.shape[-2]}: "
                "with one point the mean, output scale and noise are not identifiable"
            )
        self.model = model
        self.mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)

    def loss(self) -> Tensor:
        output = self.model(*self.model.train_inputs)
        loss = -self.mll(output, self.model.train_targets)
        # batched models (e.g. several outputs) give one loss per batch member
        return loss.sum()

    def step(self, opt: torch.optim.Optimizer, parameters: list[Tensor], is_lbfgs: bool) -> float:
        def closure() -> Tensor:
            opt.zero_grad()
            loss = self.loss()
            if not bool(torch.isfinite(loss)):
                raise _NonFinite(f"loss is {float(loss.detach())}")
            loss.backward()
            if not _finite_gradients(parameters):
                raise _NonFinite("gradients are not finite")
            return loss

        if is_lbfgs:
            # LBFGS evaluates the closure at its start point first; that value is this iteration's
            loss = opt.step(closure)
            return float(loss.detach())
        loss = closure()
        opt.step()
        return float(loss.detach())


class _VariationalRun:
    # an epoch's mean loss describes the parameters it ended with better than those it began with
    loss_after_step = True

    def __init__(
        self,
        model: gpytorch.models.ApproximateGP,
        train_x: Tensor | None,
        train_y: Tensor | None,
        batch_size: int,
        seed: int,
    ) -> None:
        train_x = getattr(model, "train_x", None) if train_x is None else train_x
        train_y = getattr(model, "train_y", None) if train_y is None else train_y
        if train_x is None or train_y is None:
            raise ValueError("pass train_x and train_y for a variational GP without model.train_x/train_y")
        self.train_x, self.train_y = check_training_data(train_x, train_y)
        self.model = model
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.elbo = gpytorch.mlls.VariationalELBO(model.likelihood, model, num_data=self.train_y.shape[0])

    def step(self, opt: torch.optim.Optimizer, parameters: list[Tensor], is_lbfgs: bool) -> float:
        n = self.train_y.shape[0]
        order = torch.randperm(n, generator=self.generator).to(self.train_x.device)
        total = 0.0
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            opt.zero_grad()
            loss = -self.elbo(self.model(self.train_x[batch]), self.train_y[batch])
            if not bool(torch.isfinite(loss)):
                raise _NonFinite(f"minibatch loss is {float(loss.detach())}")
            loss.backward()
            if not _finite_gradients(parameters):
                raise _NonFinite("gradients are not finite")
            opt.step()
            total += float(loss.detach()) * batch.numel()
        return total / n
