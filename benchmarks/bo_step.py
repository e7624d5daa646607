#!/usr/bin/env python
"""Cost of one BO iteration (fit + acquisition optimisation): a network surrogate against BoTorch's RBF.

One iteration of a BO loop fits the surrogate (``fit_gpytorch_mll``) and maximises qLogNEI
(``optimize_acqf``, batched candidates of shape ``(restarts, q, d)`` against the training
points). This script times both, per surrogate, on the same data, the surrogates interleaved
within one process (each repeat runs every surrogate once, so that load from other processes
affects them alike), and prints medians and ratios to BoTorch's default ``SingleTaskGP``:

* ``rbf``: ``SingleTaskGP(X, Y)`` (BoTorch's default kernel and priors);
* ``default``: :func:`gp_ntk.bo.make_bo_model`'s default, ``ScaleKernel(UnitVarianceKernel(
  NTKKernel(depth=3, ArcCos(2), ard_num_dims=d)))`` with its priors and ``CenteredNormalize``, a
  depth-3 NTK of ReLU squared with per-feature first-layer weight variances, rescaled to unit
  prior variance;
* ``relu``: the same with ReLU (``activation="relu"``), the default until 2026-12-08;
* ``ntk-unit``: the ReLU kernel without priors, floors or input centring;
* ``default-two-blocks``: the default's modules in BoTorch's own ``SingleTaskGP``, whose
  predictions evaluate the kernel twice, ``k(X*, X)`` and ``k(X*, X*)``, where
  :class:`gp_ntk.bo.NetworkSingleTaskGP` evaluates one block;
* ``default-warm``, ``rbf-warm``, ``default-two-blocks-warm`` and ``relu-warm``: those surrogates with the fit started at the hyperparameters
  fitted on the first N - 1 points (``gp_ntk.bo.warm_start``, what ``run_bo`` does between
  iterations; the earlier fit is not timed).

Besides the times it counts how often the acquisition optimisation evaluated qLogNEI and times
one evaluation with its gradient at the ``(restarts, 1, d)`` candidates L-BFGS moves
(``--calls`` of them, after the iteration, untimed by it): the iteration's acquisition time is
about the product of the two, so the table says which of them a difference comes from. It
times one evaluation of the fit's objective (the marginal log likelihood with its priors, and
its gradient in every hyperparameter) at the fitted hyperparameters the same way: how many of
them a fit takes follows the optimiser's path, which rounding can change, while the cost of one
is a property of the surrogate.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bo_step.py                 # N = 20, d = 10, 7 repeats
    OMP_NUM_THREADS=1 python benchmarks/bo_step.py --n 10 20 40 --repeats 11
    OMP_NUM_THREADS=1 python benchmarks/bo_step.py --n 40 110 --surrogates rbf-warm default-warm rbf
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import statistics
import time
import warnings

import botorch
import gpytorch
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from gpytorch.kernels import ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood

import gp_ntk
from gp_ntk.bo import warm_start
from gp_ntk.kernels import UnitVarianceKernel


def _rbf(x, y):
    return SingleTaskGP(x, y, outcome_transform=Standardize(1))


def _ntk_unit(x, y):
    dim = x.shape[-1]
    base = gp_ntk.NTKKernel(3, "relu", weight_variance=2.0, bias_variance=0.1, ard_num_dims=dim)
    kernel = ScaleKernel(UnitVarianceKernel(base))
    return SingleTaskGP(x, y, covar_module=kernel, outcome_transform=Standardize(1))


def _default(x, y):
    from gp_ntk.bo import make_bo_model

    bounds = torch.stack([torch.zeros(x.shape[-1]), torch.ones(x.shape[-1])]).to(x)
    return make_bo_model(x, y, bounds)


def _relu(x, y):
    from gp_ntk.bo import make_bo_model

    bounds = torch.stack([torch.zeros(x.shape[-1]), torch.ones(x.shape[-1])]).to(x)
    return make_bo_model(x, y, bounds, activation="relu")


def _default_two_blocks(x, y):
    # the same modules in BoTorch's own SingleTaskGP: GPyTorch's prediction, k(X*, X) and
    # k(X*, X*) as two kernel evaluations, where NetworkSingleTaskGP evaluates one block
    model = _default(x, y)
    return SingleTaskGP(
        x,
        y,
        covar_module=model.covar_module,
        input_transform=model.input_transform,
        outcome_transform=Standardize(y.shape[-1]),
    )


SURROGATES = {
    "rbf": _rbf,
    "default": _default,
    "ntk-unit": _ntk_unit,
    "default-two-blocks": _default_two_blocks,
    "relu": _relu,
    "default-warm": _default,
    "rbf-warm": _rbf,
    "default-two-blocks-warm": _default_two_blocks,
    "relu-warm": _relu,
}


def _problem(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, dtype=torch.float64, generator=generator)
    y = -((x - 0.3) ** 2).sum(-1, keepdim=True) + 0.05 * torch.randn(
        n, 1, dtype=torch.float64, generator=generator
    )
    return x, y


def _fitted_on_all_but_the_last(factory, x, y):
    model = factory(x[:-1], y[:-1])
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def call_time(acquisition, dim: int, restarts: int, calls: int, dtype: torch.dtype) -> float:
    """Median seconds of one qLogNEI value and gradient at ``(restarts, 1, dim)`` candidates, as L-BFGS takes them."""
    generator = torch.Generator().manual_seed(0)
    candidates = torch.rand(restarts, 1, dim, generator=generator, dtype=dtype)
    times = []
    for call in range(calls + 2):  # two warm-up calls
        start = time.perf_counter()
        points = candidates.clone().requires_grad_(True)
        torch.autograd.grad(acquisition(points).sum(), points)
        if call >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def mll_time(model, calls: int) -> float:
    """Median seconds of one marginal log likelihood (with priors) and its gradient in every hyperparameter."""
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    times = []
    try:
        for call in range(calls + 2):  # two warm-up calls
            start = time.perf_counter()
            value = mll(model(*model.train_inputs), model.train_targets).sum()
            torch.autograd.grad(value, parameters)
            if call >= 2:
                times.append(time.perf_counter() - start)
    finally:
        model.eval()
    return statistics.median(times)


def iteration(
    factory, x, y, restarts: int, raw_samples: int, seed: int, previous=None, calls: int = 0
) -> tuple[float, float, int, float]:
    """One BO iteration: fit the model (from ``previous``'s hyperparameters if given), optimise qLogNEI (q = 1) on ``[0, 1]^d``.

    Returns the seconds of the fit and of the acquisition optimisation, how many times that
    evaluated the acquisition function, and (with ``calls > 0``, untimed by the rest) the
    median seconds of one value and gradient over ``calls`` evaluations, of the acquisition
    function and of the fit's objective.
    """
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = factory(x, y)
    warm_start(model, previous)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    fitted = time.perf_counter()
    acquisition = qLogNoisyExpectedImprovement(model, x, prune_baseline=True)
    evaluations = []
    hook = acquisition.register_forward_hook(lambda *_: evaluations.append(1))
    bounds = torch.stack([torch.zeros(x.shape[-1]), torch.ones(x.shape[-1])]).to(x)
    optimize_acqf(acquisition, bounds, q=1, num_restarts=restarts, raw_samples=raw_samples)
    optimised = time.perf_counter()
    hook.remove()
    one_call = call_time(acquisition, x.shape[-1], restarts, calls, x.dtype) if calls else float("nan")
    one_mll = mll_time(model, calls) if calls else float("nan")
    return fitted - start, optimised - fitted, len(evaluations), one_call, one_mll


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--raw-samples", type=int, default=64)
    parser.add_argument("--surrogates", nargs="+", choices=list(SURROGATES), default=list(SURROGATES))
    parser.add_argument(
        "--calls",
        type=int,
        default=10,
        help="evaluations of qLogNEI and of the marginal likelihood (value and gradient) timed one by one per repeat (0: none)",
    )
    args = parser.parse_args(argv)
    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {platform.machine()}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} thread(s)), gpytorch {gpytorch.__version__}, botorch {botorch.__version__};"
        f" d = {args.dim}, qLogNEI q = 1, {args.restarts} restarts, {args.raw_samples} raw samples,"
        f" median of {args.repeats} (surrogates interleaved)"
    )
    print(
        "\n| N | surrogate | fit [s] | acquisition [s] | iteration [s] | / RBF | acquisition"
        f" calls | one call [ms] ({args.restarts} x 1 x {args.dim}) | / RBF | one MLL [ms] | / RBF |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for n in args.n:
        x, y = _problem(n, args.dim, seed=n)
        times = {name: {} for name in args.surrogates}
        failures = dict.fromkeys(args.surrogates, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            previous = {
                name: _fitted_on_all_but_the_last(SURROGATES[name], x, y)
                for name in args.surrogates
                if name.endswith("-warm")
            }
            for repeat in range(args.repeats + 1):  # the first round is a warm-up
                for name in args.surrogates:
                    try:
                        fit, acq, evaluations, one_call, one_mll = iteration(
                            SURROGATES[name],
                            x,
                            y,
                            args.restarts,
                            args.raw_samples,
                            seed=repeat,
                            previous=previous.get(name),
                            calls=args.calls,
                        )
                    except FloatingPointError:
                        # a line search of the fit can probe variances that underflow; the
                        # trajectory is chaotic (rounding-level changes move where it goes)
                        failures[name] += 1
                        continue
                    if repeat:
                        times[name][repeat] = (fit, acq, fit + acq, evaluations, one_call, one_mll)
        medians = {
            name: [statistics.median(t[i] for t in ts.values()) if ts else float("nan") for i in range(6)]
            for name, ts in times.items()
        }

        def ratio(name: str, column: int) -> float:
            # the median of per-repeat ratios: each repeat ran every surrogate back to back
            ts, reference = times[name], times.get("rbf", {})
            shared = [r for r in ts if r in reference]
            return (
                statistics.median(ts[r][column] / reference[r][column] for r in shared)
                if shared
                else math.nan
            )

        ratios = {name: ratio(name, 2) for name in times}
        call_ratios = {name: ratio(name, 4) for name in times}
        mll_ratios = {name: ratio(name, 5) for name in times}
        for name, (fit, acq, total, evaluations, one_call, one_mll) in medians.items():
            failed = f" ({failures[name]} fits failed)" if failures[name] else ""
            print(
                f"| {n} | {name}{failed} | {fit:.3f} | {acq:.3f} | {total:.3f} | {ratios[name]:.2f} |"
                f" {evaluations:.0f} | {1e3 * one_call:.2f} | {call_ratios[name]:.2f} |"
                f" {1e3 * one_mll:.2f} | {mll_ratios[name]:.2f} |"
            )
        results[n] = {
            "medians": {name: values[:3] for name, values in medians.items()},
            "ratios": ratios,
            "acquisition_calls": {name: values[3] for name, values in medians.items()},
            "call_seconds": {name: values[4] for name, values in medians.items()},
            "call_ratios": call_ratios,
            "mll_seconds": {name: values[5] for name, values in medians.items()},
            "mll_ratios": mll_ratios,
        }
    return results


if __name__ == "__main__":
    main()
