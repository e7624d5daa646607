#!/usr/bin/env python
r"""BO benchmark with the optimum at a random point of the box: no surrogate gains from where it is.

Problems. BoTorch test functions with a known optimiser :math:`x^*` and optimal value
:math:`f^*` (minimised; the loop maximises :math:`-f`): Ackley, Levy, Rastrigin, Griewank,
Rosenbrock, Styblinski-Tang, Michalewicz, Powell and Dixon-Price in 10 dimensions, Cosine8,
Hartmann-6, and Branin and Hartmann-6 embedded in 50 and 100 dimensions. Every problem is posed
on the unit box :math:`[0, 1]^D`. For every seed a target :math:`t \sim U[0, 1]^d` and a Haar
random rotation :math:`R` are drawn, and the objective at :math:`u \in [0, 1]^d` is

.. math::
    g(u) = f\bigl(l + w \odot \operatorname{fold}(u^* + R (u - t))\bigr),
    \qquad \operatorname{fold}(z) = 1 - \lvert (z \bmod 2) - 1\rvert,

with :math:`u^* = (x^* - l)/w` the optimiser in unit coordinates of the function's box
:math:`[l, l + w]`: a rotation about the optimiser, which is moved to :math:`t`, and points
leaving the box reflected back into it (a triangle wave, continuous, so :math:`g` stays
continuous; :math:`g \ge f^*` everywhere and :math:`g(t) = f^*`, so the optimum value is still
:math:`f^*`). Embedded problems apply this to the low-dimensional function, whose coordinates
are a random subset of the :math:`D`; the others have no effect.

Michalewicz's optimiser is not tabulated in BoTorch; the function is separable, so it is found
coordinate by coordinate on a fine grid (the sum matches BoTorch's :math:`f^*` to 1e-4).

Surrogates: BoTorch's default ``SingleTaskGP`` (``rbf``), Matern-5/2 ARD with Gamma priors
(``matern``), BoTorch's ``InfiniteWidthBNNKernel`` (``ibnn``), Sobol search (``sobol``),
``gp_ntk.bo.make_bo_model``'s default (``default``: the depth-3 NTK of ReLU squared with ARD and
unit variance; each fit starts at the previous iteration's hyperparameters, ``run_bo``'s default,
and ``default-cold`` starts every fit afresh), the ReLU NTK that was the default until
2026-12-08 (``ntk-relu``; the levers below were measured on it and keep it), the ReLU NNGP before
that (``nngp-previous``), the one-line path
``ScaleKernel(gp_ntk.NNGPKernel(depth=3))`` with BoTorch's ``Normalize`` (``one-line``), and the
variants of ``benchmarks/_bo_surrogates.py`` measured on the way.

Usage::

    python benchmarks/bo_offcentre.py --quick                      # CI smoke run, seconds
    python benchmarks/bo_offcentre.py --out results/offcentre      # full run (resumable)
    python benchmarks/bo_offcentre.py --out DIR --shard 0/2 &      # two processes, one folder
    python benchmarks/bo_offcentre.py --out DIR --report           # tables + plot from DIR

Results go to ``<out>/runs-<shard>.jsonl`` (every finished run; rerunning skips runs present in
any ``runs*.jsonl`` of the folder), ``<out>/results.md`` and ``<out>/bo_offcentre_regret.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _bo_surrogates  # noqa: E402  (the candidate surrogates, next to this script)

DTYPE = torch.float64
REGRET_FLOOR = 1e-8
MC_SAMPLES = 128


def _load_bo_benchmark():
    spec = importlib.util.spec_from_file_location("gp_ntk_benchmark_bo_base", HERE / "bo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------- problems


def _michalewicz_optimizer(dim: int, m: int = 10) -> torch.Tensor:
    grid = torch.linspace(0, math.pi, 400_001, dtype=DTYPE)
    index = torch.arange(1, dim + 1, dtype=DTYPE).unsqueeze(-1)
    values = -torch.sin(grid) * torch.sin(index * grid**2 / math.pi) ** (2 * m)
    return grid[values.argmin(-1)]


def fold(z: torch.Tensor) -> torch.Tensor:
    """Reflect ``z`` into [0, 1] (triangle wave of period 2): continuous, identity on [0, 1]."""
    return 1 - ((z % 2) - 1).abs()


class OffCentreProblem:
    """A test function rotated about its optimiser, which is moved to a random point of ``[0, 1]^D``.

    Maximisation form: ``problem(X) = -f(...)``, ``optimal_value = -f*`` (``+`` for functions
    BoTorch poses as maximisation problems).
    """

    def __init__(self, function: Any, optimizer: torch.Tensor, dim: int, seed: int, rotate: bool = True):
        generator = torch.Generator().manual_seed(seed)
        base_dim = function.dim
        self.function = function
        self.dim = dim
        self.lower = function.bounds[0].to(DTYPE)
        self.width = (function.bounds[1] - function.bounds[0]).to(DTYPE)
        self.unit_optimizer = (optimizer.to(DTYPE) - self.lower) / self.width
        self.target = torch.rand(base_dim, generator=generator, dtype=DTYPE)
        if rotate:
            q, r = torch.linalg.qr(torch.randn(base_dim, base_dim, generator=generator, dtype=DTYPE))
            self.rotation = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # Haar measure
        else:
            self.rotation = torch.eye(base_dim, dtype=DTYPE)
        self.active = torch.randperm(dim, generator=generator)[:base_dim].sort().values
        self.bounds = torch.stack([torch.zeros(dim, dtype=DTYPE), torch.ones(dim, dtype=DTYPE)])
        # BoTorch marks the few functions posed as maximisation problems (Cosine8)
        self.sign = -1.0 if getattr(function, "_is_minimization_by_default", True) else 1.0
        self.optimal_value = self.sign * float(function.optimal_value)
        self.optimizer = torch.full((dim,), 0.5, dtype=DTYPE)
        self.optimizer[self.active] = self.target

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        u = X[..., self.active]
        z = fold(self.unit_optimizer + (u - self.target) @ self.rotation.T)
        return self.sign * self.function.evaluate_true(self.lower + self.width * z)


@dataclass(frozen=True)
class Problem:
    name: str
    make: Callable[[int], OffCentreProblem]
    dim: int


def _problems() -> dict[str, Problem]:
    from botorch import test_functions as tf

    def simple(
        cls, base_dim: int | None, dim: int | None = None, **options
    ) -> Callable[[int], OffCentreProblem]:
        def make(seed: int) -> OffCentreProblem:
            function = cls(**({"dim": base_dim} if base_dim is not None else {}), **options).to(DTYPE)
            if function._optimizers is not None:
                optimizer = torch.tensor(function._optimizers[0], dtype=DTYPE)
            else:
                optimizer = _michalewicz_optimizer(function.dim)
            return OffCentreProblem(function, optimizer, dim or function.dim, seed)

        return make

    table = [
        ("ackley-10", tf.Ackley, 10, None),
        ("levy-10", tf.Levy, 10, None),
        ("rastrigin-10", tf.Rastrigin, 10, None),
        ("griewank-10", tf.Griewank, 10, None),
        ("rosenbrock-10", tf.Rosenbrock, 10, None),
        ("styblinski-tang-10", tf.StyblinskiTang, 10, None),
        ("michalewicz-10", tf.Michalewicz, 10, None),
        ("powell-10", tf.Powell, 10, None),
        ("dixon-price-10", tf.DixonPrice, 10, None),
        ("cosine-8", tf.Cosine8, None, None),
        ("hartmann-6", tf.Hartmann, 6, None),
        ("branin-in-50", tf.Branin, None, 50),
        ("hartmann-6-in-100", tf.Hartmann, 6, 100),
        ("branin-in-10-quick", tf.Branin, None, 10),
    ]
    problems = {}
    for name, cls, base_dim, dim in table:
        make = simple(cls, base_dim, dim)
        problems[name] = Problem(name, make, dim or (base_dim or (8 if cls is tf.Cosine8 else 2)))
    return problems


FULL_PROBLEMS = tuple(p for p in _problems() if not p.endswith("quick"))
SCREEN_PROBLEMS = ("levy-10", "rastrigin-10", "styblinski-tang-10", "hartmann-6-in-100")
Q4_PROBLEMS = ("ackley-10", "levy-10", "rosenbrock-10", "styblinski-tang-10", "hartmann-6-in-100")
QUICK_PROBLEMS = ("branin-in-10-quick",)


# ------------------------------------------------------------------------------- surrogates


def _one_line(centred: bool):
    """The adoption line: ``ScaleKernel(NNGPKernel(depth=3))`` in a plain ``SingleTaskGP``."""

    def factory(train_X, train_Y, bounds):
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.input import Normalize
        from gpytorch.kernels import ScaleKernel

        from gp_ntk import NNGPKernel
        from gp_ntk.bo import CenteredNormalize

        transform = CenteredNormalize if centred else Normalize
        return SingleTaskGP(
            train_X,
            train_Y,
            covar_module=ScaleKernel(NNGPKernel(depth=3)),
            input_transform=transform(train_X.shape[-1], bounds=bounds),
        )

    return factory


def _make_bo_model(**options):
    def factory(train_X, train_Y, bounds):
        from gp_ntk.bo import make_bo_model

        return make_bo_model(train_X, train_Y, bounds, **options)

    return factory


def _relu_by_default(options: dict) -> dict:
    """``options`` with the ReLU NTK's activation unless they name one: the levers below were
    measured as changes to the ReLU NTK, the default until 2026-12-08, and stay so."""
    if options.get("kernel", "ntk") in ("ntk", "nngp"):
        return {"activation": "relu", **options}
    return dict(options)


def _noise_prior(kind: str, **options):
    """``make_bo_model`` with another noise prior (noise >= 1e-4 as in BoTorch's default likelihood).

    ``"gamma"``: BoTorch's earlier likelihood, Gamma(1.1, 0.05), nearly flat over [1e-4, 1];
    ``"low"``: BoTorch's present LogNormal prior moved down by 3 in log space, LogNormal(-7, 1).
    """
    options = _relu_by_default(options)

    def factory(train_X, train_Y, bounds):
        from botorch.models.utils.gpytorch_modules import (
            MIN_INFERRED_NOISE_LEVEL,
            get_gaussian_likelihood_with_gamma_prior,
        )
        from gpytorch.constraints import GreaterThan
        from gpytorch.likelihoods import GaussianLikelihood
        from gpytorch.priors import LogNormalPrior

        from gp_ntk.bo import make_bo_model

        if kind == "gamma":
            likelihood = get_gaussian_likelihood_with_gamma_prior()
        elif kind == "low":
            mode = math.exp(-7.0 - 1.0**2)  # started at the prior's mode, as BoTorch's default is
            likelihood = GaussianLikelihood(
                noise_prior=LogNormalPrior(loc=-7.0, scale=1.0),
                noise_constraint=GreaterThan(MIN_INFERRED_NOISE_LEVEL, initial_value=mode),
            )
        else:
            raise ValueError(f"kind must be 'gamma' or 'low', got {kind!r}")
        return make_bo_model(train_X, train_Y, bounds, likelihood=likelihood.to(train_X), **options)

    return factory


def _compressed_outcomes(**options):
    r"""``make_bo_model`` fitted to outcomes standardised, passed through ``Bilog``, standardised again.

    ``Bilog`` (:math:`\operatorname{sign}(z)\log(1 + |z|)`) applied after the first
    ``Standardize`` acts in standard-deviation units, so it is the same map on every problem: it
    leaves values within about one standard deviation of the mean nearly linear and compresses the
    tails of heavy-tailed objectives.
    """
    options = _relu_by_default(options)

    def factory(train_X, train_Y, bounds):
        from botorch.models.transforms.outcome import Bilog, ChainedOutcomeTransform, Standardize

        from gp_ntk.bo import make_bo_model

        batch_shape = train_X.shape[:-2]
        outcome_transform = ChainedOutcomeTransform(
            standardize=Standardize(m=1, batch_shape=batch_shape),
            bilog=Bilog(),
            restandardize=Standardize(m=1, batch_shape=batch_shape),
        )
        return make_bo_model(train_X, train_Y, bounds, outcome_transform=outcome_transform, **options)

    return factory


def _incumbent(train_X: torch.Tensor, train_Y: torch.Tensor) -> torch.Tensor:
    """The observed input with the highest (first) outcome."""
    return train_X[train_Y[..., 0].argmax()]


def _incumbent_centred(pull: float = 1.0, **options):
    """``make_bo_model`` with the origin of its inputs at the best point observed so far.

    A dot-product kernel singles out the origin of its inputs; ``CenteredNormalize`` puts it at
    the centre of the box, where the optimum of a moved problem is no likelier than anywhere
    else. Here the box keeps its width but is centred at the incumbent (the observed input with
    the highest outcome), so the inputs span up to :math:`[-2, 2]` per feature and the origin
    follows the search; it moves with the data, fixed during each fit. ``pull`` below 1 puts the
    origin that fraction of the way from the centre of the box to the incumbent.
    """
    options = _relu_by_default(options)
    from gp_ntk.validation import check_number

    pull = check_number(pull, "pull", minimum=0, maximum=1)

    def factory(train_X, train_Y, bounds):
        from gp_ntk.bo import CenteredNormalize, make_bo_model

        bounds = bounds.to(train_X)
        middle = 0.5 * (bounds[0] + bounds[1])
        origin = (1.0 - pull) * middle + pull * _incumbent(train_X, train_Y)
        half_width = 0.5 * (bounds[1] - bounds[0])
        box = torch.stack([origin - half_width, origin + half_width])
        transform = CenteredNormalize(train_X.shape[-1], bounds=box)
        return make_bo_model(train_X, train_Y, bounds, input_transform=transform, **options)

    return factory


def _origin_mixture(**options):
    r"""``make_bo_model`` whose kernel mixes the box-centred view and the incumbent-centred one.

    The default's unit-variance kernel :math:`c` becomes
    :math:`(1 - \rho)\,c(x, y) + \rho\,c(x - s, y - s)` (:class:`_bo_surrogates.OriginMixture`),
    :math:`s` the incumbent in ``CenteredNormalize``'s units and :math:`\rho` learnt, so the
    evidence weighs the box's centre against the best point observed so far.
    """
    options = _relu_by_default(options)

    def factory(train_X, train_Y, bounds):
        from gp_ntk.bo import make_bo_model

        model = make_bo_model(train_X, train_Y, bounds, **options)
        origin = model.input_transform(_incumbent(train_X, train_Y).unsqueeze(0))[0].detach()
        scale = model.covar_module
        scale.base_kernel = _bo_surrogates.OriginMixture(scale.base_kernel, origin).to(train_X)
        return model

    return factory


def _plus_stationary(**options):
    r"""``make_bo_model`` whose kernel adds BoTorch's default RBF to the network kernel.

    The covariance is :math:`s_1\,c(x, y) + s_2\,k_{\mathrm{RBF}}(x, y)`, :math:`c` the default's
    unit-variance network kernel and :math:`k_{\mathrm{RBF}}` BoTorch's ARD RBF with its
    dimension-scaled LogNormal lengthscale prior [Hvarfner2024]_, the prior's location moved by
    :math:`\log 2` because ``CenteredNormalize`` maps the box to :math:`[-1, 1]^d`, twice the width
    BoTorch's prior assumes. Each term has the default's outputscale prior (mode 1, started at
    half of it), so the evidence weighs the origin-shaped functions against stationary ones.
    """
    options = _relu_by_default(options)

    def factory(train_X, train_Y, bounds):
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
        from gpytorch.kernels import ScaleKernel
        from gpytorch.priors import LogNormalPrior

        from gp_ntk.bo import make_bo_model
        from gp_ntk.bo.priors import outputscale_priors

        model = make_bo_model(train_X, train_Y, bounds, **options)
        num_dims = train_X.shape[-1]
        rbf = get_covar_module_with_dim_scaled_prior(ard_num_dims=num_dims)
        prior = rbf.lengthscale_prior
        shifted = LogNormalPrior(loc=float(prior.loc) + math.log(2.0), scale=float(prior.scale))
        rbf.register_prior("lengthscale_prior", shifted, rbf._lengthscale_param, rbf._lengthscale_closure)
        # cast before setting the starts, so that they carry no float32 rounding
        stationary = ScaleKernel(rbf, **outputscale_priors()).to(train_X)
        rbf.lengthscale = float(shifted.mode)
        stationary.outputscale = 0.5
        network = model.covar_module
        network.outputscale = 0.5
        model.covar_module = network + stationary
        return model

    return factory


def _candidate(**options):
    options = _relu_by_default(options)

    def factory(train_X, train_Y, bounds):
        return _bo_surrogates.make_offcentre_model(train_X, train_Y, bounds, **options)

    return factory


def _previous(**options):
    def factory(train_X, train_Y, bounds):
        return _bo_surrogates.previous_default(train_X, train_Y, bounds, **options)

    return factory


def surrogates() -> dict[str, Callable | None]:
    from gp_ntk.activations import ArcCos

    base = _load_bo_benchmark()
    return {
        "rbf": base._rbf,
        "matern": base._matern,
        "ibnn": base._ibnn,
        "sobol": None,
        "nngp-previous": _previous(),
        "one-line": _one_line(centred=False),
        "one-line-centred": _one_line(centred=True),
        # make_bo_model's default, the depth-3 NTK of ReLU squared with ARD and unit variance
        # (measured as "ntk-relu2" before it became the default on 2026-12-08)
        "default": _make_bo_model(),
        "default-cold": _make_bo_model(),
        # the ReLU NTK by name, whichever activation the default has
        "ntk-relu": _make_bo_model(activation="relu"),
        # levers (screening)
        "nngp-ard": _previous(ard=True),
        "nngp-unit": _previous(normalize=True),
        "uv-shared": _candidate(kernel="nngp", ard=False),
        "uv-ard": _candidate(kernel="nngp"),
        "uv-ard-centre": _candidate(kernel="nngp", learn_centre=True),
        "uv-ard-depth1": _candidate(kernel="nngp", depth=1),
        "plain-ard-centre": _candidate(kernel="nngp", unit_variance=False, bias_mode=0.1, learn_centre=True),
        "ntk-centre": _candidate(learn_centre=True),
        "ntk-centre-1": _candidate(learn_centre=True, centre_prior_scale=1.0),
        "ntk-wide-2": _candidate(input_prior_scale=2.0),
        "ntk-wide-3.5": _candidate(input_prior_scale=3.5),
        "ntk-narrow-0.5": _candidate(input_prior_scale=0.5),
        "ntk-input-mode-0.5": _candidate(input_prior_mode=0.5),
        # the default's prior above its mode, a broader one below: inputs without effect can
        # switch off, the ones the data use are held as before (for the embedded problems)
        "ntk-split-3": _candidate(input_prior_lower_scale=3.0),
        "ntk-split-5": _candidate(input_prior_lower_scale=5.0),
        # the same, broader below the mode the more inputs there are beyond ten: d / 10
        # (the default's prior up to ten inputs, log-scale 5 at 50 and 10 at 100)
        "ntk-sparse-10": _candidate(sparse_beyond=10),
        "ntk-depth2": _candidate(depth=2),
        "ntk-depth5": _candidate(depth=5),
        "ntk-gamma-noise": _noise_prior("gamma"),
        "ntk-low-noise": _noise_prior("low"),
        "ntk-nngp-mix": _candidate(mix_nngp=True),
        "ntk-erf": _candidate(activation="erf"),
        "ntk-gelu": _candidate(activation="gelu"),
        # ReLU squared (arc-cosine order 2): its functions are smoother than ReLU's, and most of
        # the 10-D problems are polynomials of degree 2-4 in each coordinate
        "ntk-relu2": _candidate(activation=ArcCos(2)),
        "ntk-bilog": _compressed_outcomes(),
        "ntk-incumbent": _incumbent_centred(),
        "ntk-incumbent-half": _incumbent_centred(pull=0.5),
        "ntk-two-origins": _origin_mixture(),
        # the bias variance's prior mode where the default's fits put it (0.2-0.9), and the
        # other side: a more nearly stationary kernel
        "ntk-bias-0.25": _candidate(bias_mode=0.25),
        "ntk-bias-4": _candidate(bias_mode=4.0),
        "ntk-plus-rbf": _plus_stationary(),
        "ntk-relu-or-erf": _bo_surrogates.EvidenceSelection(
            {"relu": _make_bo_model(activation="relu"), "erf": _candidate(activation="erf")}
        ),
        # the origin where the evidence puts it: the box's centre (the default) or the incumbent
        "ntk-origin-by-evidence": _bo_surrogates.EvidenceSelection(
            {"centre": _make_bo_model(activation="relu"), "incumbent": _incumbent_centred()}
        ),
        # the same two origins averaged by evidence instead of one selected
        "ntk-origin-averaged": _bo_surrogates.EvidenceAverage(
            {"centre": _make_bo_model(activation="relu"), "incumbent": _incumbent_centred()}
        ),
        # ReLU and ReLU squared averaged by evidence
        "ntk-relu-relu2-averaged": _bo_surrogates.EvidenceAverage(
            {"relu": _make_bo_model(activation="relu"), "relu2": _candidate(activation=ArcCos(2))}
        ),
        # the default and Matern-5/2 ARD (BoTorch's Gamma priors) averaged by evidence
        "ntk-matern-averaged": _bo_surrogates.EvidenceAverage(
            {"relu": _make_bo_model(activation="relu"), "matern": base._matern}
        ),
    }


LABELS = {
    "rbf": "BoTorch default (RBF)",
    "matern": "Matern-5/2 ARD",
    "ibnn": "BoTorch IBNN",
    "sobol": "Sobol",
    "nngp-previous": "ReLU NNGP (previous default)",
    "one-line": "one-line (Normalize)",
    "one-line-centred": "one-line (CenteredNormalize)",
    "default": "make_bo_model default (ReLU squared NTK)",
    "ntk-relu": "ReLU NTK (default until 2026-12-08)",
    "default-cold": "make_bo_model default, cold fits",
}
REFERENCE = "rbf"
# Surrogates as their users run them: BoTorch's loop fits every model from its initial
# hyperparameters; gp_ntk's run_bo starts each fit where the previous one ended.
# Every other arm is a gp_ntk surrogate, run warm; these are fitted cold.
# An evidence selection warm-starts each of its candidates itself.
COLD_STARTED = {
    "rbf",
    "matern",
    "ibnn",
    "nngp-previous",
    "one-line",
    "one-line-centred",
    "default-cold",
    "ntk-relu-or-erf",
    "ntk-origin-by-evidence",
    "ntk-origin-averaged",
    "ntk-relu-relu2-averaged",
    "ntk-matern-averaged",
}


def _acquisition(model, train_X, train_Y):
    from botorch.acquisition import qLogNoisyExpectedImprovement
    from botorch.sampling import SobolQMCNormalSampler

    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([MC_SAMPLES]))
    # a model average has no single Cholesky factor of the baseline to cache
    cache_root = not _bo_surrogates.is_model_average(model)
    return qLogNoisyExpectedImprovement(
        model, X_baseline=train_X, sampler=sampler, prune_baseline=True, cache_root=cache_root
    )


def _sobol_search(problem, num_evaluations: int, seed: int) -> torch.Tensor:
    from torch.quasirandom import SobolEngine

    X = SobolEngine(problem.dim, scramble=True, seed=10_000 + seed).draw(num_evaluations).to(DTYPE)
    return problem(X)


# ------------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class Budget:
    num_initial: int
    num_evaluations: int
    batch_size: int
    restarts: int
    raw_samples: int


def log_regret(values: Sequence[float], optimal_value: float) -> list[float]:
    """``log10(max(f* - best so far, REGRET_FLOOR))`` after every evaluation."""
    out, best = [], -math.inf
    for value in values:
        if math.isfinite(value):
            best = max(best, value)
        out.append(math.log10(max(optimal_value - best, REGRET_FLOOR)) if math.isfinite(best) else math.nan)
    return out


def _fitted_noise(model) -> float:
    try:
        return float(model.likelihood.noise.detach().mean())
    except AttributeError:
        return math.nan


def run_one(problem: Problem, surrogate: str, factory, seed: int, budget: Budget) -> dict[str, Any]:
    from gp_ntk.bo import run_bo

    instance = problem.make(zlib.crc32(problem.name.encode()) % 100_000 + seed)
    start = time.perf_counter()
    noises: list[float] = []
    if factory is None:
        values = _sobol_search(instance, budget.num_evaluations, seed).tolist()
        fit_s = acq_s = []
        events: list[str] = []
    else:

        def recording_factory(train_X, train_Y, bounds):
            model = factory(train_X, train_Y, bounds)
            models.append(model)
            return model

        models: list[Any] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_bo(
                instance,
                instance.bounds,
                budget.num_evaluations,
                surrogate=recording_factory,
                acquisition=_acquisition,
                batch_size=budget.batch_size,
                num_initial=budget.num_initial,
                num_restarts=budget.restarts,
                raw_samples=budget.raw_samples,
                seed=seed,
                progress=False,
                warm_start=surrogate not in COLD_STARTED,
            )
        values = result.Y.tolist()
        fit_s, acq_s = result.fit_seconds, result.acquisition_seconds
        events = [f"{event.iteration}:{event.kind}" for event in result.events]
        noises = [_fitted_noise(model) for model in models]
    record = {
        "problem": problem.name,
        "surrogate": surrogate,
        "seed": seed,
        "q": budget.batch_size,
        "num_initial": budget.num_initial,
        "num_evaluations": budget.num_evaluations,
        "restarts": budget.restarts,
        "raw_samples": budget.raw_samples,
        "optimal_value": instance.optimal_value,
        "log_regret": log_regret(values, instance.optimal_value),
        "fit_seconds": list(fit_s),
        "acquisition_seconds": list(acq_s),
        "noise": noises,
        "events": events,
        "total_seconds": time.perf_counter() - start,
    }
    if isinstance(factory, _bo_surrogates.EvidenceSelection):
        record["choices"] = list(factory.choices)
    if isinstance(factory, _bo_surrogates.EvidenceAverage):
        record["weights"] = list(factory.weights)
    return record


def _claim(folder: Path, key: tuple[str, str, int, int]) -> bool:
    """Reserve one run for this process, so that processes sharing ``folder`` never repeat each other.

    A claim is a file holding the claiming process id; a claim whose process has ended (a run
    that was interrupted) is taken over. Runs already in ``runs*.jsonl`` are never claimed.
    """
    if key in {(r["problem"], r["surrogate"], r["seed"], r["q"]) for r in _load(folder)}:
        return False
    claims = folder / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / ("__".join(str(part) for part in key) + ".pid")
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text() or "0")
                os.kill(owner, 0)
                return False  # claimed by a process that is still running
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # its process ended: take the run over
                continue
            except PermissionError:
                return False
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def recorded_budgets(records: Sequence[dict[str, Any]]) -> str:
    """The budgets the runs were made with, from the records (older records lack some fields)."""
    fields = ("num_initial", "num_evaluations", "q", "restarts", "raw_samples")
    seen = sorted({tuple(r.get(f) for f in fields) for r in records}, key=str)
    if not seen:
        return "no runs"
    return "; ".join(
        ", ".join(f"{f}={'not recorded' if v is None else v}" for f, v in zip(fields, budget))
        for budget in seen
    )


def _load(folder: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(folder.glob("runs*.jsonl")):
        with path.open() as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def run_benchmark(
    problems: Sequence[str],
    names: Sequence[str],
    seeds: Sequence[int],
    budget: Budget,
    out: Path | None,
    shard: tuple[int, int] = (0, 1),
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Every (problem, surrogate, seed) run not yet in ``out``; this shard's share of them."""
    catalogue, factories = _problems(), surrogates()
    for name in problems:
        if name not in catalogue:
            raise ValueError(f"unknown problem {name!r}; choose from {sorted(catalogue)}")
    for name in names:
        if name not in factories:
            raise ValueError(f"unknown surrogate {name!r}; choose from {sorted(factories)}")
    records = [] if out is None else _load(out)
    done = {(r["problem"], r["surrogate"], r["seed"], r["q"]) for r in records}
    todo = [
        (p, s, seed)
        for seed in seeds
        for p in problems
        for s in names
        if (p, s, seed, budget.batch_size) not in done
    ]
    start = len(todo) * shard[0] // max(shard[1], 1)
    todo = todo[start:] + todo[:start]  # processes sharing out start apart; claims keep them apart
    path = None if out is None else out / f"runs-{shard[0]}-{os.getpid()}.jsonl"
    for index, (problem, surrogate, seed) in enumerate(todo):
        if out is not None and not _claim(out, (problem, surrogate, seed, budget.batch_size)):
            continue
        record = run_one(catalogue[problem], surrogate, factories[surrogate], seed, budget)
        records.append(record)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        if verbose:
            noise = f", noise {statistics.median(record['noise']):.2g}" if record["noise"] else ""
            print(
                f"[{index + 1}/{len(todo)}] {problem:20s} {surrogate:16s} q={budget.batch_size} seed {seed}: "
                f"log10 regret {record['log_regret'][-1]:7.3f}, {record['total_seconds']:6.1f} s{noise}",
                flush=True,
            )
    wanted = set(problems), set(names), set(seeds)
    return [
        r
        for r in records
        if r["problem"] in wanted[0]
        and r["surrogate"] in wanted[1]
        and r["seed"] in wanted[2]
        and r["q"] == budget.batch_size
    ]


# --------------------------------------------------------------------------------- summary


def _stderr(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def paired_outcome(mine: dict[int, float], reference: dict[int, float], alpha: float = 0.05) -> str:
    """``"win"``/``"loss"``/``"tie"`` by a two-sided paired t-test on final log regret over common seeds.

    A Wilcoxon signed-rank test cannot reach p < 0.05 with 5 pairs (its smallest two-sided p is
    2/32), so the paired t-test is used.
    """
    from scipy import stats

    seeds = sorted(set(mine) & set(reference))
    if len(seeds) < 2:
        return "n/a"
    differences = [mine[s] - reference[s] for s in seeds]
    if all(abs(d) < 1e-12 for d in differences):
        return "tie"
    p_value = stats.ttest_rel([mine[s] for s in seeds], [reference[s] for s in seeds]).pvalue
    if not (p_value < alpha):
        return "tie"
    return "win" if statistics.fmean(differences) < 0 else "loss"


# The budget of the ten-seed tables; runs longer than this report their time on both sides of it.
TIME_SPLIT = 30


def _time_cell(records: Sequence[dict[str, Any]], start: int, stop: int | None) -> str:
    """Mean "total (fit + acquisition)" seconds over the iterations whose evaluations lie in [start, stop)."""
    fit: list[float] = []
    acquisition: list[float] = []
    for r in records:
        first = start // r["q"]
        last = None if stop is None else stop // r["q"]
        fit += r["fit_seconds"][first:last]
        acquisition += r["acquisition_seconds"][first:last]
    if not fit:
        return "–"
    f, a = statistics.fmean(fit), statistics.fmean(acquisition)
    return f"{f + a:.2f} ({f:.2f} + {a:.2f})"


def tables(records: Sequence[dict[str, Any]], reference: str = REFERENCE) -> str:
    """Final-regret table with ranks, win/tie/loss against ``reference`` and Sobol, time per iteration."""
    problems = [p for p in _problems() if any(r["problem"] == p for r in records)]
    order = list(surrogates())
    names = [s for s in order if any(r["surrogate"] == s for r in records)]
    final: dict[tuple[str, str], dict[int, float]] = {}
    times: dict[str, list[dict[str, Any]]] = {}
    noise: dict[tuple[str, str], list[float]] = {}
    for r in records:
        final.setdefault((r["problem"], r["surrogate"]), {})[r["seed"]] = r["log_regret"][-1]
        if r["fit_seconds"]:
            times.setdefault(r["surrogate"], []).append(r)
        noise.setdefault((r["problem"], r["surrogate"]), []).extend(r["noise"][-1:])
    header = "| problem | " + " | ".join(LABELS.get(s, s) for s in names) + " |"
    rule = "|---|" + "---:|" * len(names)
    lines = ["**Final log10 simple regret** (mean ± s.e. over seeds; bold: best mean)", "", header, rule]
    ranks: dict[str, list[float]] = {s: [] for s in names}
    for p in problems:
        means = {s: statistics.fmean(final[(p, s)].values()) for s in names if (p, s) in final}
        best = min(means.values())
        cells = []
        for s in names:
            if s not in means:
                cells.append("–")
                continue
            text = f"{means[s]:.2f} ± {_stderr(list(final[(p, s)].values())):.2f}"
            cells.append(f"**{text}**" if means[s] == best else text)
        counts = sorted({len(final[(p, s)]) for s in names if (p, s) in final})
        seeds = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        lines.append(f"| {p} ({seeds} seeds) | " + " | ".join(cells) + " |")
        ordered = sorted(means, key=means.get)
        for s in means:
            ranks[s].append(1 + ordered.index(s))
    lines.append("| mean rank | " + " | ".join(f"{statistics.fmean(ranks[s]):.1f}" for s in names) + " |")
    lines += [
        "",
        f"**Paired t-test (p < 0.05) on final log regret: win/tie/loss against {LABELS.get(reference, reference)} and against Sobol**",
        "",
    ]
    lines += [
        "| problem | " + " | ".join(LABELS.get(s, s) for s in names if s not in (reference, "sobol")) + " |"
    ]
    lines += ["|---|" + "---|" * (len(names) - 2)]
    totals: dict[str, dict[str, int]] = {}
    for p in problems:
        cells = []
        for s in names:
            if s in (reference, "sobol"):
                continue
            if (p, s) not in final:
                cells.append("–")
                continue
            vs_ref = paired_outcome(final[(p, s)], final.get((p, reference), {}))
            vs_sobol = paired_outcome(final[(p, s)], final.get((p, "sobol"), {}))
            totals.setdefault(s, {}).setdefault(vs_ref, 0)
            totals[s][vs_ref] += 1
            totals[s].setdefault("sobol-" + vs_sobol, 0)
            totals[s]["sobol-" + vs_sobol] += 1
            cells.append(f"{vs_ref} / {vs_sobol}")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    summary = []
    for s in names:
        if s in totals:
            t = totals[s]
            summary.append(
                f"{t.get('win', 0)}-{t.get('tie', 0)}-{t.get('loss', 0)} / "
                f"{t.get('sobol-win', 0)}-{t.get('sobol-tie', 0)}-{t.get('sobol-loss', 0)}"
            )
    lines.append("| total W-T-L (vs default / vs Sobol) | " + " | ".join(summary) + " |")
    lines += [
        "",
        "**Time per BO iteration** (seconds, mean over iterations of all problems: total (fit + acquisition))",
        "",
    ]
    lines += [header.replace("problem", "iterations"), rule]
    longest = max((len(r["fit_seconds"]) * r["q"] for rs in times.values() for r in rs), default=0)
    windows = [("all", 0, None)]
    if longest > TIME_SPLIT:
        windows += [(f"evaluations 1–{TIME_SPLIT}", 0, TIME_SPLIT), (f"after {TIME_SPLIT}", TIME_SPLIT, None)]
    for label, start, stop in windows:
        cells = [_time_cell(times.get(s, []), start, stop) for s in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Fitted noise variance at the last iteration** (standardised units, median over seeds)",
        "",
    ]
    lines += [header, rule]
    for p in problems:
        cells = []
        for s in names:
            values = [v for v in noise.get((p, s), []) if math.isfinite(v)]
            cells.append(f"{statistics.median(values):.2g}" if values else "–")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Mean ± s.e. log10 simple regret against evaluations, one panel per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [p for p in _problems() if any(r["problem"] == p for r in records)]
    names = [s for s in surrogates() if any(r["surrogate"] == s for r in records)]
    columns = min(4, len(problems))
    rows = math.ceil(len(problems) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.1 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, p in zip(axes.flat, problems, strict=False):
        for index, s in enumerate(names):
            runs = [r["log_regret"] for r in records if r["problem"] == p and r["surrogate"] == s]
            if not runs:
                continue
            length = min(len(run) for run in runs)
            curves = torch.tensor([run[:length] for run in runs], dtype=DTYPE)
            mean = curves.mean(0)
            stderr = curves.std(0) / math.sqrt(curves.shape[0]) if curves.shape[0] > 1 else 0 * mean
            x = torch.arange(1, length + 1)
            style = "--" if s == "sobol" else "-"
            color = "0.4" if s == "sobol" else colors[index % len(colors)]
            ax.plot(x, mean, style, color=color, lw=1.5, label=LABELS.get(s, s))
            ax.fill_between(x, mean - stderr, mean + stderr, color=color, alpha=0.15, lw=0)
        ax.set_title(p, fontsize=10)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("log10 regret")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(problems) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend_columns = min(len(labels), 5)
    fig.legend(handles, labels, loc="lower center", ncol=legend_columns, frameon=False, fontsize=9)
    legend_height = 0.3 * math.ceil(len(labels) / legend_columns) / fig.get_figheight()
    fig.tight_layout(rect=(0, legend_height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- noise study


def noise_study(problems: Sequence[str], seeds: Sequence[int], iterations: int = 10) -> str:
    """Why a smooth network kernel explains BO data as noise: MAP fits on the loop's own data.

    For each problem and seed, ``make_bo_model``'s previous default (the ReLU NNGP) runs
    ``iterations`` BO steps after 10 Sobol points; on the data it collected, each model is fitted by ``fit_bo_model`` and reported
    with its fitted noise variance (standardised units) and its MAP objective (the marginal log
    likelihood plus log priors, per data point, as ``ExactMarginalLogLikelihood`` returns it). The
    row "noise held at 1e-4" refits the NNGP with the noise fixed: a lower MAP there
    than in the free fit means the large noise is what the evidence prefers, not an optimiser's
    local optimum.
    """
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from gp_ntk.bo import fit_bo_model, run_bo

    factories = surrogates()
    models = {
        "ReLU NNGP (previous default)": factories["nngp-previous"],
        "ReLU NTK, previous set-up": _previous(kernel="ntk"),
        "uv-ard": factories["uv-ard"],
        "ReLU NTK (default until 2026-12-08)": factories["ntk-relu"],
        "BoTorch default (RBF)": factories["rbf"],
    }

    def map_value(model) -> float:
        model.train()
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with torch.no_grad():
            return float(mll(model(*model.train_inputs), model.train_targets))

    lines = [
        f"{iterations} BO iterations of the ReLU NNGP (previous default) after 10 Sobol points; q = 1.",
        "",
        "| problem | seed | model | fitted noise | MAP per point |",
        "|---|---:|---|---:|---:|",
    ]
    catalogue = _problems()
    for name in problems:
        for seed in seeds:
            instance = catalogue[name].make(zlib.crc32(name.encode()) % 100_000 + seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = run_bo(
                    instance,
                    instance.bounds,
                    10 + iterations,
                    surrogate=factories["nngp-previous"],
                    acquisition=_acquisition,
                    num_initial=10,
                    num_restarts=2,
                    raw_samples=64,
                    seed=seed,
                    progress=False,
                )
                X, Y = result.X, result.Y.unsqueeze(-1)
                for label, factory in models.items():
                    model = factory(X, Y, instance.bounds)
                    fit_bo_model(model)
                    lines.append(
                        f"| {name} | {seed} | {label} | {_fitted_noise(model):.3g} | {map_value(model):.3f} |"
                    )
                    if label.startswith("ReLU NNGP"):
                        held = factory(X, Y, instance.bounds)
                        held.likelihood.noise = 1e-4
                        held.likelihood.raw_noise.requires_grad_(False)
                        fit_bo_model(held)
                        lines.append(
                            f"| {name} | {seed} | {label}, noise held at 1e-4 | 1e-4 | {map_value(held):.3f} |"
                        )
            print("\n".join(lines[-6:]), flush=True)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small problem, tiny budget: a smoke run")
    parser.add_argument(
        "--screen", action="store_true", help=f"screening subset: {' '.join(SCREEN_PROBLEMS)}"
    )
    parser.add_argument("--problems", nargs="+")
    parser.add_argument("--surrogates", nargs="+")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--q", type=int, default=1, help="batch size")
    parser.add_argument("--initial", type=int, default=10, help="initial Sobol points")
    parser.add_argument(
        "--evaluations", type=int, default=20, help="BO evaluations after the initial design (cap)"
    )
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--raw-samples", type=int, default=128)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--shard",
        default="0/1",
        help="i/n: start at the i-th missing run (processes sharing --out never repeat runs)",
    )
    parser.add_argument("--report", action="store_true", help="tables and plot from --out only")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--noise-study", action="store_true", help="the fitted-noise diagnostic instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    if args.quick:
        problems, names = list(QUICK_PROBLEMS), args.surrogates or ["rbf", "sobol", "default"]
        budget = Budget(4, 6, args.q, 1, 16)
        seeds = [0]
    else:
        problems = args.problems or list(SCREEN_PROBLEMS if args.screen else FULL_PROBLEMS)
        names = args.surrogates or [
            "rbf",
            "matern",
            "ibnn",
            "sobol",
            "nngp-previous",
            "one-line",
            "one-line-centred",
            "default",
        ]
        budget = Budget(
            args.initial, args.initial + args.evaluations, args.q, args.restarts, args.raw_samples
        )
        seeds = list(range(args.seeds))
    shard_index, shard_count = (int(v) for v in args.shard.split("/"))
    if args.noise_study:
        text = noise_study(args.problems or ["levy-10", "styblinski-tang-10", "hartmann-6"], seeds)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "noise_study.md").write_text(text + "\n")
        return {"noise_study": text}
    if args.report:
        if args.out is None:
            parser.error("--report needs --out")
        records = [
            r
            for r in _load(args.out)
            if r["problem"] in problems
            and r["surrogate"] in names
            and r["seed"] in seeds
            and r["q"] == args.q
        ]
    else:
        records = run_benchmark(problems, names, seeds, budget, args.out, (shard_index, shard_count))
    text = tables(records)
    command = "python benchmarks/bo_offcentre.py " + " ".join(sys.argv[1:] if argv is None else argv)
    # a report describes the runs it read, not this command's (default) budget options
    budget_text = recorded_budgets(records) if args.report else str(budget)
    print(f"\n{text}\n\nBudget: {budget_text}\nCommand: {command}")
    plot_path = args.plot or (None if args.out is None else args.out / f"bo_offcentre_regret_q{args.q}.png")
    if plot_path is not None and records:
        plot(records, plot_path)
    if args.out is not None:
        (args.out / f"results_q{args.q}.md").write_text(
            f"{text}\n\nBudget: {budget_text}\n\nCommand: `{command}`\n"
        )
    return {"records": records, "tables": text}


if __name__ == "__main__":
    main()
