r"""A complete, fault-tolerant BO loop: :func:`~gp_ntk.bo.run_bo`.

Sobol initial design, fit (:func:`~gp_ntk.bo.fit_bo_model`), acquisition optimisation
(BoTorch's ``optimize_acqf``), evaluation; it reports and recovers from NaN objective values,
candidates outside the bounds or repeating earlier ones, failed fits and failed acquisition
optimisations, and records the wall time of every iteration. What it cannot recover from (the
objective raising, say) stops it with :class:`~gp_ntk.bo.BOError`, which keeps every evaluation made so far
as ``error.result``. BoTorch maximises; negate an objective to minimise it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from botorch.acquisition import AcquisitionFunction, qLogNoisyExpectedImprovement, qUpperConfidenceBound
from botorch.models.model import Model
from botorch.optim import optimize_acqf
from botorch.utils.sampling import manual_seed
from torch import Tensor
from torch.quasirandom import SobolEngine

from ..fitting import wants_progress
from ..validation import check_bounds, check_int, check_number, check_tensor
from .fitting import NUMERICAL_FAILURES, fit_bo_model, warm_start
from .models import BO_KERNEL_NAMES, make_bo_model

__all__ = ["EVENT_KINDS", "AcquisitionFactory", "BOError", "BOEvent", "BOResult", "ModelFactory", "run_bo"]

# events are logged as "gp_ntk.bo" whichever module of the package reports them
_logger = logging.getLogger("gp_ntk.bo")

EVENT_KINDS = (
    "nan_objective",
    "out_of_bounds",
    "nan_candidate",
    "duplicate",
    "fit_retry",
    "fit_failed",
    "acquisition_failed",
    "too_few_observations",
)


@dataclass(frozen=True)
class BOEvent:
    """Something :func:`~gp_ntk.bo.run_bo` recovered from: where, what, and what it did instead."""

    iteration: int
    kind: str
    message: str


@dataclass
class BOResult:
    """Everything a :func:`~gp_ntk.bo.run_bo` run evaluated, in order.

    ``X`` (``N x d``) and ``Y`` (``N``) hold every evaluation, failed ones (``Y`` NaN)
    included; ``iteration[i]`` is the loop iteration that proposed evaluation ``i`` (0 for the
    initial design). Times are per BO iteration (the initial design is not an iteration):
    ``fit_seconds`` for fitting the surrogate, ``acquisition_seconds`` for building and
    optimising the acquisition function, ``iteration_seconds`` for the whole iteration
    including the objective. ``events`` lists every fault the loop recovered from.
    """

    X: Tensor
    Y: Tensor
    iteration: Tensor
    fit_seconds: list[float] = field(default_factory=list)
    acquisition_seconds: list[float] = field(default_factory=list)
    iteration_seconds: list[float] = field(default_factory=list)
    events: list[BOEvent] = field(default_factory=list)

    @property
    def best_values(self) -> Tensor:
        """Best finite value after each evaluation (``-inf`` before the first finite one)."""
        finite = torch.where(torch.isfinite(self.Y), self.Y, torch.full_like(self.Y, -math.inf))
        return torch.cummax(finite, dim=0).values

    @property
    def best_value(self) -> float:
        return float(self.best_values[-1]) if self.Y.numel() else -math.inf

    @property
    def best_X(self) -> Tensor | None:
        """The evaluated input with the best finite value (``None`` if there is none)."""
        finite = torch.isfinite(self.Y)
        if not bool(finite.any()):
            return None
        index = torch.where(finite, self.Y, torch.full_like(self.Y, -math.inf)).argmax()
        return self.X[index]

    def events_of(self, kind: str) -> list[BOEvent]:
        """The events of one kind (one of ``EVENT_KINDS``)."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, got {kind!r}")
        return [event for event in self.events if event.kind == kind]


class BOError(RuntimeError):
    """:func:`~gp_ntk.bo.run_bo` stopped by an error it does not recover from; nothing evaluated is lost.

    ``result`` is the :class:`~gp_ntk.bo.BOResult` of every evaluation made before the error (complete
    iterations; the initial design counts as iteration 0), ``candidates`` the points being
    proposed or evaluated when it happened (``None`` if none were), ``iteration`` that
    iteration. The original exception is ``__cause__``.
    """

    def __init__(self, message: str, result: BOResult, iteration: int, candidates: Tensor | None) -> None:
        super().__init__(message)
        self.result = result
        self.iteration = iteration
        self.candidates = candidates


ModelFactory = Callable[[Tensor, Tensor, Tensor], Model]
AcquisitionFactory = Callable[[Model, Tensor, Tensor], AcquisitionFunction]


def _model_factory(surrogate: str | ModelFactory | None) -> ModelFactory | None:
    if surrogate is None or (isinstance(surrogate, str) and surrogate.lower() == "random"):
        return None
    if isinstance(surrogate, str):
        if surrogate.lower() not in BO_KERNEL_NAMES:
            raise ValueError(
                f"surrogate must be one of {BO_KERNEL_NAMES}, 'random', None or a callable, got {surrogate!r}"
            )
        return functools.partial(_named_surrogate, kernel=surrogate.lower())
    if callable(surrogate):
        return surrogate
    raise ValueError(
        f"surrogate must be a kernel name, 'random', None or a callable, got {type(surrogate).__name__}"
    )


def _acquisition_factory(acquisition: str | AcquisitionFactory, ucb_beta: float) -> AcquisitionFactory:
    if callable(acquisition):
        return acquisition
    if isinstance(acquisition, str) and acquisition.lower() == "qlognei":
        return _log_noisy_expected_improvement
    if isinstance(acquisition, str) and acquisition.lower() == "qucb":
        return functools.partial(_upper_confidence_bound, beta=ucb_beta)
    raise ValueError(f"acquisition must be 'qlognei', 'qucb' or a callable, got {acquisition!r}")


def _named_surrogate(train_X: Tensor, train_Y: Tensor, bounds: Tensor, *, kernel: str) -> Model:
    return make_bo_model(train_X, train_Y, bounds, kernel=kernel)


def _log_noisy_expected_improvement(model: Model, train_X: Tensor, train_Y: Tensor) -> AcquisitionFunction:
    return qLogNoisyExpectedImprovement(model, X_baseline=train_X, prune_baseline=True)


def _upper_confidence_bound(
    model: Model, train_X: Tensor, train_Y: Tensor, *, beta: float
) -> AcquisitionFunction:
    return qUpperConfidenceBound(model, beta=beta)


class _Loop:
    """State of one :func:`~gp_ntk.bo.run_bo` run; the public function only checks and wires arguments."""

    def __init__(self, objective, bounds, generator, duplicate_tolerance, progress_bar, warm_start) -> None:
        self.objective = objective
        self.bounds = bounds
        self.width = bounds[1] - bounds[0]
        self.generator = generator
        self.duplicate_tolerance = duplicate_tolerance
        self.bar = progress_bar
        self.X = bounds.new_zeros(0, bounds.shape[1])
        self.Y = bounds.new_zeros(0)
        self.iteration = torch.zeros(0, dtype=torch.long)
        self.events: list[BOEvent] = []
        self.current_iteration = 0
        self.pending: Tensor | None = None
        self.warm_start = warm_start
        self.fitted_model: Model | None = None  # the last fit that succeeded

    def report(self, iteration: int, kind: str, message: str) -> None:
        self.events.append(BOEvent(iteration, kind, message))
        text = f"iteration {iteration}: {kind}: {message}"
        if self.bar is not None:
            self.bar.write(text)
        else:
            _logger.warning(text)

    def random_points(self, count: int) -> Tensor:
        u = torch.rand(count, self.bounds.shape[1], generator=self.generator, dtype=self.bounds.dtype)
        return self.bounds[0] + u.to(self.bounds.device) * self.width

    def repair(self, candidates: Tensor, iteration: int) -> Tensor:
        """Replace NaN candidates and repeats by random points; clamp candidates into the box."""
        candidates = candidates.detach().clone().reshape(-1, self.bounds.shape[1])
        bad = ~torch.isfinite(candidates).all(-1)
        if bool(bad.any()):
            self.report(
                iteration,
                "nan_candidate",
                f"{int(bad.sum())} non-finite candidate(s) replaced by random points",
            )
            candidates[bad] = self.random_points(int(bad.sum()))
        outside = ((candidates < self.bounds[0]) | (candidates > self.bounds[1])).any(-1)
        if bool(outside.any()):
            excess = torch.maximum(self.bounds[0] - candidates, candidates - self.bounds[1]).clamp_min(0)
            self.report(
                iteration,
                "out_of_bounds",
                f"{int(outside.sum())} candidate(s) outside the bounds by up to "
                f"{float((excess / self.width).max()):.3g} of the box width, clamped into it",
            )
            candidates = torch.minimum(torch.maximum(candidates, self.bounds[0]), self.bounds[1])
        for i in range(candidates.shape[0]):
            for attempt in range(100):
                earlier = torch.cat([self.X, candidates[:i]])
                if not earlier.shape[0]:
                    break
                gap = ((earlier - candidates[i]).abs() / self.width).amax(-1).min()
                if float(gap) > self.duplicate_tolerance:
                    break
                if attempt == 0:
                    self.report(
                        iteration,
                        "duplicate",
                        f"candidate {i} repeats an evaluated point (max-norm gap {float(gap):.2g} of the box "
                        "width); a random point is evaluated instead",
                    )
                candidates[i] = self.random_points(1)[0]
        return candidates

    def evaluate(self, candidates: Tensor, iteration: int) -> None:
        self.pending = candidates
        count = candidates.shape[0]
        name = getattr(self.objective, "__qualname__", None) or type(self.objective).__name__
        expected = f"it must map a ({count}, {candidates.shape[1]}) tensor to {count} number(s)"
        with torch.no_grad():
            values = self.objective(candidates)
        if values is None:
            raise ValueError(f"objective {name!r} returned None for {count} point(s); {expected}")
        if not isinstance(values, Tensor):
            try:
                values = torch.as_tensor(values)
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(
                    f"objective {name!r} returned {type(values).__name__}, not numbers; {expected}"
                ) from error
        if values.is_complex() or values.dtype == torch.bool:
            raise ValueError(f"objective {name!r} returned a tensor of dtype {values.dtype}; {expected}")
        values = values.to(self.bounds).reshape(-1)
        if values.shape[0] != count:
            raise ValueError(
                f"objective {name!r} returned {values.shape[0]} value(s) for {count} point(s); {expected}"
            )
        failed = ~torch.isfinite(values)
        if bool(failed.any()):
            self.report(
                iteration,
                "nan_objective",
                f"{int(failed.sum())} of {values.shape[0]} evaluation(s) returned NaN/inf; kept in the "
                "result, left out of the surrogate",
            )
            values = torch.where(failed, torch.full_like(values, math.nan), values)
        self.X = torch.cat([self.X, candidates])
        self.Y = torch.cat([self.Y, values])
        self.iteration = torch.cat(
            [self.iteration, torch.full((values.shape[0],), iteration, dtype=torch.long)]
        )
        self.pending = None

    def result(self, fit_s, acq_s, it_s) -> BOResult:
        return BOResult(self.X, self.Y, self.iteration, fit_s, acq_s, it_s, self.events)


def run_bo(
    objective: Callable[[Tensor], Tensor],
    bounds: Tensor,
    num_evaluations: int,
    *,
    surrogate: str | ModelFactory | None = "ntk",
    acquisition: str | AcquisitionFactory = "qlognei",
    batch_size: int = 1,
    num_initial: int | None = None,
    initial_X: Tensor | None = None,
    num_restarts: int = 10,
    raw_samples: int = 512,
    ucb_beta: float = 2.0,
    max_fit_attempts: int = 3,
    warm_start: bool = True,
    duplicate_tolerance: float = 1e-6,
    seed: int = 0,
    progress: bool | None = None,
    description: str | None = None,
    callback: Callable[[int, BOResult], None] | None = None,
) -> BOResult:
    r"""Maximise ``objective`` over the box ``bounds`` by Bayesian optimisation.

    Each iteration fits a fresh surrogate to all finite observations (:func:`~gp_ntk.bo.fit_bo_model`),
    optimises the acquisition function over the box with BoTorch's ``optimize_acqf``, and
    evaluates ``batch_size`` candidates, until ``num_evaluations`` evaluations are spent. The
    initial design is a scrambled Sobol sample (or ``initial_X``).

    Faults are reported (``result.events``, and on the progress bar or the ``gp_ntk.bo``
    logger) and recovered from, never passed on as NaN:

    * an objective value that is NaN/inf: kept in ``result.Y`` as NaN, left out of the
      surrogate (the point still counts as evaluated, so it is not proposed again);
    * a candidate that is NaN or outside the bounds: replaced by a random point, or clamped;
    * a candidate that repeats an evaluated point (within ``duplicate_tolerance`` of the box
      width in every coordinate): replaced by a random point, since a deterministic objective
      would return the same value;
    * a failed fit: refitted from the initial hyperparameters with 100x jitter, up to
      ``max_fit_attempts`` times; then, like a failed acquisition optimisation or fewer than
      two finite observations, the iteration evaluates random points.

    Nothing evaluated is lost when the loop cannot go on. Any other exception (the objective
    raising, returning ``None`` or the wrong number of values, a surrogate factory or
    ``callback`` raising anything but a numerical failure) stops the run with a
    :class:`~gp_ntk.bo.BOError` whose ``result`` holds every evaluation made so far and whose
    ``__cause__`` is the original exception; Ctrl-C propagates as ``KeyboardInterrupt`` with
    the same partial result as its ``result`` attribute.

    Args:
        objective: maps a ``(q, d)`` tensor to ``q`` values (any shape with ``q`` entries).
        bounds: ``2 x d`` float tensor; its dtype and device are used throughout (float64
            recommended, as in BoTorch).
        num_evaluations: total evaluation budget, initial design included.
        surrogate: a kernel name for :func:`~gp_ntk.bo.make_bo_model` (``"ntk"``, its default, ``"nngp"``, ``"arccos"``,
            ``"erf"``), a callable ``(train_X, train_Y, bounds) -> Model`` (``train_Y`` is
            ``n x 1``), or ``"random"``/``None`` for random search.
        acquisition: ``"qlognei"`` (``qLogNoisyExpectedImprovement`` on the observed inputs),
            ``"qucb"`` (``qUpperConfidenceBound`` with ``ucb_beta``), or a callable
            ``(model, train_X, train_Y) -> AcquisitionFunction``.
        batch_size: candidates per iteration (``q``), optimised jointly.
        num_initial: size of the initial design; default ``min(num_evaluations, max(5, 2 d))``
            capped at 20.
        initial_X: explicit initial design (``n x d``, inside the bounds); overrides ``num_initial``.
        num_restarts, raw_samples: ``optimize_acqf``'s multi-start settings.
        max_fit_attempts: see :func:`~gp_ntk.bo.fit_bo_model`.
        warm_start: start each fit at the hyperparameters of the last successful one
            (:func:`~gp_ntk.bo.warm_start`), instead of the surrogate's initial values: fewer
            optimiser iterations per fit. A fit that fails is retried from the warm start,
            then the next iteration starts from the last fit that succeeded.
        duplicate_tolerance: repeat threshold, as a fraction of the box width.
        seed: seeds the initial design, the random fallbacks and BoTorch's MC samplers.
        progress: show a tqdm progress bar with the best value so far; default: when standard
            error is a terminal.
        description: progress-bar label.
        callback: called as ``callback(iteration, result_so_far)`` after every iteration.
    """
    if not callable(objective):
        raise ValueError(f"objective must be callable, got {type(objective).__name__}")
    bounds = check_bounds(bounds)
    num_dims = bounds.shape[1]
    for name, value in (
        ("num_evaluations", num_evaluations),
        ("batch_size", batch_size),
        ("num_restarts", num_restarts),
        ("raw_samples", raw_samples),
    ):
        check_int(value, name)
    check_number(ucb_beta, "ucb_beta", minimum=0, strict_minimum=True)
    check_number(duplicate_tolerance, "duplicate_tolerance", minimum=0, maximum=1, strict_maximum=True)
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start must be True or False, got {warm_start!r}")
    factory = _model_factory(surrogate)
    make_acquisition = _acquisition_factory(acquisition, ucb_beta)
    if initial_X is not None:
        if not isinstance(initial_X, Tensor) or initial_X.dim() != 2 or initial_X.shape[-1] != num_dims:
            shape = tuple(initial_X.shape) if isinstance(initial_X, Tensor) else type(initial_X).__name__
            raise ValueError(f"initial_X must be an (n, {num_dims}) tensor, got {shape}")
        initial_X = check_tensor(initial_X.to(bounds), "initial_X")
        outside = ((initial_X < bounds[0]) | (initial_X > bounds[1])).any(-1)
        if bool(outside.any()):
            raise ValueError(f"initial_X has {int(outside.sum())} row(s) outside the bounds")
        if initial_X.shape[0] > num_evaluations:
            raise ValueError(
                f"initial_X has {initial_X.shape[0]} rows, more than num_evaluations={num_evaluations}"
            )
    elif num_initial is None:
        num_initial = min(num_evaluations, max(5, min(2 * num_dims, 20)))
    else:
        check_int(num_initial, "num_initial")
        num_initial = min(num_initial, num_evaluations)

    generator = torch.Generator().manual_seed(seed)
    bar = None
    if wants_progress(progress):
        from tqdm.auto import tqdm

        bar = tqdm(
            total=num_evaluations,
            desc=description or f"BO {surrogate if isinstance(surrogate, str) else 'custom'}",
            dynamic_ncols=True,
            leave=False,
        )
    loop = _Loop(objective, bounds, generator, float(duplicate_tolerance), bar, warm_start)
    fit_seconds: list[float] = []
    acquisition_seconds: list[float] = []
    iteration_seconds: list[float] = []
    try:
        if initial_X is None:
            sobol = SobolEngine(num_dims, scramble=True, seed=seed)
            initial_X = bounds[0] + sobol.draw(num_initial).to(bounds) * (bounds[1] - bounds[0])
        loop.evaluate(initial_X, 0)
        _advance(bar, loop)
        iteration = 0
        while loop.X.shape[0] < num_evaluations:
            iteration += 1
            loop.current_iteration = iteration
            start = time.perf_counter()
            q = min(batch_size, num_evaluations - loop.X.shape[0])
            candidates, fit_time, acq_time = _propose(
                loop,
                factory,
                make_acquisition,
                q,
                iteration,
                seed,
                num_restarts,
                raw_samples,
                max_fit_attempts,
            )
            loop.evaluate(loop.repair(candidates, iteration), iteration)
            fit_seconds.append(fit_time)
            acquisition_seconds.append(acq_time)
            iteration_seconds.append(time.perf_counter() - start)
            _advance(bar, loop)
            if callback is not None:
                callback(iteration, loop.result(fit_seconds, acquisition_seconds, iteration_seconds))
    except Exception as error:
        partial = loop.result(fit_seconds, acquisition_seconds, iteration_seconds)
        raise BOError(
            f"run_bo stopped in iteration {loop.current_iteration} after {partial.X.shape[0]} evaluation(s), "
            f"kept in error.result: {type(error).__name__}: {error}",
            partial,
            loop.current_iteration,
            loop.pending,
        ) from error
    except KeyboardInterrupt as interrupt:
        # Ctrl-C still stops the program, but a caller who catches it keeps the evaluations
        interrupt.result = loop.result(fit_seconds, acquisition_seconds, iteration_seconds)
        raise
    finally:
        if bar is not None:
            bar.close()
    return loop.result(fit_seconds, acquisition_seconds, iteration_seconds)


def _advance(bar, loop: _Loop) -> None:
    if bar is None:
        return
    bar.update(loop.X.shape[0] - bar.n)
    finite = loop.Y[torch.isfinite(loop.Y)]
    if finite.numel():
        bar.set_postfix(best=f"{float(finite.max()):.5g}", events=len(loop.events))


def _propose(
    loop, factory, make_acquisition, q, iteration, seed, num_restarts, raw_samples, max_fit_attempts
):
    """Candidates of one iteration, with the fit and acquisition times; random on any failure."""
    if factory is None:
        return loop.random_points(q), 0.0, 0.0
    finite = torch.isfinite(loop.Y)
    if int(finite.sum()) < 2:
        loop.report(
            iteration, "too_few_observations", f"{int(finite.sum())} finite value(s); random points instead"
        )
        return loop.random_points(q), 0.0, 0.0
    train_X, train_Y = loop.X[finite], loop.Y[finite].unsqueeze(-1)
    fit_start = time.perf_counter()
    try:
        model = factory(train_X, train_Y, loop.bounds)
        if loop.warm_start:
            warm_start(model, loop.fitted_model)
        report = fit_bo_model(model, max_attempts=max_fit_attempts)
    except NUMERICAL_FAILURES as error:
        loop.report(
            iteration,
            "fit_failed",
            f"building the surrogate failed ({type(error).__name__}: {error}); random points",
        )
        return loop.random_points(q), time.perf_counter() - fit_start, 0.0
    fit_time = time.perf_counter() - fit_start
    if report.attempts > 1 and report.succeeded:
        loop.report(
            iteration,
            "fit_retry",
            f"fit succeeded at attempt {report.attempts} with jitter {report.jitter:.0e} ({'; '.join(report.messages)})",
        )
    if not report.succeeded:
        loop.report(
            iteration,
            "fit_failed",
            f"{report.attempts} fit attempts failed ({'; '.join(report.messages)}); random points",
        )
        return loop.random_points(q), fit_time, 0.0
    loop.fitted_model = model
    acq_start = time.perf_counter()
    try:
        # BoTorch's MC base samples and random initial conditions come from torch's global
        # generator: seed it per iteration for reproducible runs, and restore it afterwards
        with manual_seed(seed * 100_003 + iteration), report.jitter_context():
            acqf = make_acquisition(model, train_X, train_Y)
            candidates, _ = optimize_acqf(
                acqf, bounds=loop.bounds, q=q, num_restarts=num_restarts, raw_samples=raw_samples
            )
    except NUMERICAL_FAILURES as error:
        loop.report(
            iteration, "acquisition_failed", f"{type(error).__name__}: {str(error)[:200]}; random points"
        )
        return loop.random_points(q), fit_time, time.perf_counter() - acq_start
    return candidates, fit_time, time.perf_counter() - acq_start
