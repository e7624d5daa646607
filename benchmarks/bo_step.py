#!/usr/bin/env python
"""Cost of one BO iteration (fit + acquisition optimisation): a network surrogate against BoTorch's RBF.

One iteration of a BO loop fits the surrogate (``fit_gpytorch_mll``) and maximises qLogNEI
(``optimize_acqf``, batched candidates of shape ``(restarts, q, d)`` against the training
points). This script times both, per surrogate, on the same data, the surrogates interleaved
within one process (each repeat runs every surrogate once, so that load from other processes
affects them alike), and prints medians and ratios to BoTorch's default ``SingleTaskGP``:

* ``rbf``: ``SingleTaskGP(X, Y)`` (BoTorch's default kernel and priors);
* ``default``: :func:`gp_ntk.bo.make_bo_model`'s default, ``ScaleKernel(UnitVarianceKernel(
  NTKKernel(depth=3, relu, ard_num_dims=d)))`` with its priors and ``CenteredNormalize``, a
  depth-3 ReLU NTK with per-feature first-layer weight variances, rescaled to unit prior variance;
* ``ntk-unit``: the same kernel without priors, floors or input centring;
* ``default-warm`` and ``rbf-warm``: those surrogates with the fit started at the hyperparameters
  fitted on the first N - 1 points (``gp_ntk.bo.warm_start``, what ``run_bo`` does between
  iterations; the earlier fit is not timed).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bo_step.py                 # N = 20, d = 10, 7 repeats
    OMP_NUM_THREADS=1 python benchmarks/bo_step.py --n 10 20 40 --repeats 11
"""

from __future__ import annotations

import argparse
import datetime as dt
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


SURROGATES = {
    "rbf": _rbf,
    "default": _default,
    "ntk-unit": _ntk_unit,
    "default-warm": _default,
    "rbf-warm": _rbf,
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


def iteration(
    factory, x, y, restarts: int, raw_samples: int, seed: int, previous=None
) -> tuple[float, float]:
    """Seconds to fit the model (from ``previous``'s hyperparameters if given) and to optimise qLogNEI (q = 1) on ``[0, 1]^d``."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = factory(x, y)
    warm_start(model, previous)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    fitted = time.perf_counter()
    acquisition = qLogNoisyExpectedImprovement(model, x, prune_baseline=True)
    bounds = torch.stack([torch.zeros(x.shape[-1]), torch.ones(x.shape[-1])]).to(x)
    optimize_acqf(acquisition, bounds, q=1, num_restarts=restarts, raw_samples=raw_samples)
    return fitted - start, time.perf_counter() - fitted


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--raw-samples", type=int, default=64)
    parser.add_argument("--surrogates", nargs="+", choices=list(SURROGATES), default=list(SURROGATES))
    args = parser.parse_args(argv)
    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {platform.machine()}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} thread(s)), gpytorch {gpytorch.__version__}, botorch {botorch.__version__};"
        f" d = {args.dim}, qLogNEI q = 1, {args.restarts} restarts, {args.raw_samples} raw samples,"
        f" median of {args.repeats} (surrogates interleaved)"
    )
    print("\n| N | surrogate | fit [s] | acquisition [s] | iteration [s] | / RBF |")
    print("|---:|---|---:|---:|---:|---:|")
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
                        fit, acq = iteration(
                            SURROGATES[name],
                            x,
                            y,
                            args.restarts,
                            args.raw_samples,
                            seed=repeat,
                            previous=previous.get(name),
                        )
                    except FloatingPointError:
                        # a line search of the fit can probe variances that underflow; the
                        # trajectory is chaotic (rounding-level changes move where it goes)
                        failures[name] += 1
                        continue
                    if repeat:
                        times[name][repeat] = (fit, acq, fit + acq)
        medians = {
            name: [statistics.median(t[i] for t in ts.values()) if ts else float("nan") for i in range(3)]
            for name, ts in times.items()
        }
        # the ratio of medians of per-repeat ratios: each repeat ran every surrogate back to back
        ratios = {
            name: statistics.median(ts[r][2] / times["rbf"][r][2] for r in ts if r in times["rbf"])
            if "rbf" in times and set(ts) & set(times["rbf"])
            else float("nan")
            for name, ts in times.items()
        }
        for name, (fit, acq, total) in medians.items():
            failed = f" ({failures[name]} fits failed)" if failures[name] else ""
            print(f"| {n} | {name}{failed} | {fit:.3f} | {acq:.3f} | {total:.3f} | {ratios[name]:.2f} |")
        results[n] = {"medians": medians, "ratios": ratios}
    return results


if __name__ == "__main__":
    main()
