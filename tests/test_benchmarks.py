"""Smoke runs of the benchmark scripts at tiny sizes: they run, their tables hold finite numbers.

Speed is not asserted here (``docs/benchmarks.md`` holds the measured figures); these tests
only keep the scripts working as the library changes.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gp_ntk_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_kernel_eval_reports_ratios_for_both_outputs_and_eager_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    kernel_eval = _load("kernel_eval")
    kernels = ["nngp+ntk-relu", "nngp-relu-eager", "ibnn", "rbf"]
    arguments = [
        "--sizes",
        "64",
        "--dtypes",
        "float64",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--isolation",
        "none",
    ]
    kernel_eval.main([*arguments, "--kernels", *kernels])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| kernel")]
    assert len(rows) == len(kernels)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        time, to_rbf, ibnn_over, peak = (float(cells[i]) for i in (3, 4, 5, 6))
        assert time > 0 and to_rbf > 0 and ibnn_over > 0 and peak >= 0


def test_mll_benchmark_times_forward_and_backward() -> None:
    results = _load("mll").main(["--quick", "--kernels", "rbf", "ntk-relu", "--n", "100"])
    assert [r["kernel"] for r in results] == ["rbf", "ntk-relu"]
    for r in results:
        assert r["finite"] and r["mll"] > 0 and r["kernel_only"] > 0


def test_lazy_matvec_uses_the_blocked_operator() -> None:
    rows = _load("lazy_matvec").main(
        ["--sizes", "300", "--dtypes", "float64", "--rhs", "3", "--kernels", "ntk-relu"]
    )
    assert rows[0]["operator"] == "BlockedKernelLinearOperator"
    assert rows[0]["seconds_1"] > 0 and math.isfinite(rows[0]["seconds_k"])


def test_neural_tangents_comparison_agrees_where_neural_tangents_is_installed() -> None:
    pytest.importorskip("neural_tangents")
    rows = _load("neural_tangents_compare").main(["--sizes", "50", "--dtypes", "float64", "--repeats", "1"])
    assert rows[0]["max_relative_difference"] < 1e-6


def test_approximation_accuracy_quick_run_matches_cholesky() -> None:
    """The --quick run solves the exact GP by CG on the lazy operator; at n = 2000 a dense
    Cholesky solve checks its predictive means and variances."""
    results = _load("approximation_accuracy").main(["--quick"])
    exact = results[0]
    assert exact.method.startswith("exact")
    assert exact.extra["dense_mean_relative_difference"] < 1e-6
    assert exact.extra["dense_variance_max_relative_difference"] < 1e-6
    methods = {"random features", "Nyström / SGPR", "NeuralEF features", "top-k eigenfunctions (dense eigh)"}
    assert {r.method for r in results[1:]} == methods
    for r in results:
        assert math.isfinite(r.rmse) and math.isfinite(r.nll_variance_points) and r.fit_seconds >= 0
        assert r.mean_distance is not None and math.isfinite(r.mean_distance)


def test_neuralef_convergence_runs(capsys) -> None:
    """Both eigenvalue rows (training moving averages, Rayleigh–Ritz) with finite scores, and
    the Ritz eigenvalue sum below the mean diagonal."""
    _load("neuralef_convergence").main(
        ["--n", "600", "--reference", "300", "--held-out", "100", "--eigenfunctions", "4", "--steps", "5"]
        + ["--ritz", "300"]
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 5 |")]
    assert [row.split(" | ")[1] for row in rows] == ["moving average", "Rayleigh-Ritz"]
    values = [[float(v) for v in row.strip(" |").split(" | ")[2:]] for row in rows]
    assert all(math.isfinite(v) for row in values for v in row)
    assert values[1][0] <= 1.0


def test_offcentre_problems_keep_their_optimum_at_a_random_point_of_the_box() -> None:
    import torch

    benchmark = _load("bo_offcentre")
    generator = torch.Generator().manual_seed(0)
    targets = []
    for name, problem in benchmark._problems().items():
        instance = problem.make(7)
        at_optimum = float(instance(instance.optimizer.unsqueeze(0)))
        assert at_optimum == pytest.approx(instance.optimal_value, abs=1e-6 * (1 + abs(at_optimum))), name
        X = torch.rand(2000, instance.dim, generator=generator, dtype=torch.float64)
        assert bool((instance(X) <= instance.optimal_value + 1e-9).all()), name
        targets.append(instance.target)
    # the moved optimisers are spread over the box, not at its centre
    centre_distance = torch.cat(targets).sub(0.5).abs()
    assert float(centre_distance.mean()) > 0.15
    assert not torch.allclose(benchmark._problems()["ackley-10"].make(0).target, targets[0])


def test_fold_reflects_into_the_unit_interval_continuously() -> None:
    import torch

    fold = _load("bo_offcentre").fold
    inside = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(fold(inside), inside)
    z = torch.linspace(-3, 3, 60_001, dtype=torch.float64)
    folded = fold(z)
    assert bool(((folded >= 0) & (folded <= 1)).all())
    assert float(folded.diff().abs().max()) <= float(z.diff().max()) * (1 + 1e-9)
    assert torch.allclose(
        fold(torch.tensor([1.25, -0.25, 2.5], dtype=torch.float64)),
        torch.tensor([0.75, 0.25, 0.5], dtype=torch.float64),
    )


def test_paired_outcome_needs_a_consistent_difference() -> None:
    outcome = _load("bo_offcentre").paired_outcome
    reference = {seed: 1.0 + 0.1 * seed for seed in range(5)}
    better = {seed: value - 0.5 - 0.01 * seed for seed, value in reference.items()}
    mixed = {seed: value + (0.5 if seed % 2 else -0.5) for seed, value in reference.items()}
    assert outcome(better, reference) == "win"
    assert outcome(reference, better) == "loss"
    assert outcome(mixed, reference) == "tie"
    assert outcome({0: 1.0}, {0: 2.0}) == "n/a"


def test_offcentre_time_table_splits_long_runs_at_the_ten_seed_budget() -> None:
    benchmark = _load("bo_offcentre")
    split = benchmark.TIME_SPLIT

    def record(surrogate: str, q: int, evaluations: int, fit: float, acquisition: float) -> dict:
        iterations = evaluations // q
        return {
            "problem": "levy-10",
            "surrogate": surrogate,
            "seed": 0,
            "q": q,
            "log_regret": [1.0],
            # Iterations beyond the split are three times as dear, so each window has its own mean.
            "fit_seconds": [fit * (3 if i * q >= split else 1) for i in range(iterations)],
            "acquisition_seconds": [acquisition * (3 if i * q >= split else 1) for i in range(iterations)],
            "noise": [0.01] * iterations,
        }

    long_run = [record("rbf", 1, 2 * split, 0.5, 0.25), record("default", 2, 2 * split, 1.0, 2.0)]
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in benchmark.tables(long_run).splitlines()
        if line.startswith(("| all ", f"| evaluations 1–{split} ", f"| after {split} "))
    }
    assert rows[f"evaluations 1–{split}"].endswith("| 0.75 (0.50 + 0.25) | 3.00 (1.00 + 2.00) |")
    assert rows[f"after {split}"].endswith("| 2.25 (1.50 + 0.75) | 9.00 (3.00 + 6.00) |")
    assert rows["all"].endswith("| 1.50 (1.00 + 0.50) | 6.00 (2.00 + 4.00) |")
    short = benchmark.tables([record("rbf", 1, split, 0.5, 0.25)])
    assert "| all | 0.75 (0.50 + 0.25) |" in short and f"after {split}" not in short


def test_offcentre_benchmark_quick_run_resumes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import torch

    benchmark = _load("bo_offcentre")
    output = benchmark.main(["--quick", "--out", str(tmp_path)])
    records = output["records"]
    assert {r["surrogate"] for r in records} == {"rbf", "sobol", "default"}
    for record in records:
        regret = torch.tensor(record["log_regret"])
        assert torch.isfinite(regret).all() and bool((regret[1:] <= regret[:-1]).all())
    assert "Final log10 simple regret" in output["tables"] and "Time per BO iteration" in output["tables"]
    assert (tmp_path / "bo_offcentre_regret_q1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = sum(path.read_text().count("\n") for path in tmp_path.glob("runs*.jsonl"))
    benchmark.main(["--quick", "--out", str(tmp_path)])
    assert sum(path.read_text().count("\n") for path in tmp_path.glob("runs*.jsonl")) == lines
    # a report names the budget its runs were made with, not its own (default) options
    problem = records[0]["problem"]
    benchmark.main(
        [
            "--report",
            "--out",
            str(tmp_path),
            "--seeds",
            "1",
            "--problems",
            problem,
            "--surrogates",
            "rbf",
            "sobol",
            "default",
        ]
    )
    budget = (tmp_path / "results_q1.md").read_text().split("Budget: ")[1].splitlines()[0]
    assert budget == "num_initial=4, num_evaluations=6, q=1, restarts=1, raw_samples=16"


def test_input_centre_shifts_both_arguments() -> None:
    import torch

    import gp_ntk

    _load("bo_offcentre")
    import _bo_surrogates as prototypes

    base = gp_ntk.NNGPKernel(depth=2).double()
    kernel = prototypes.InputCentre(base, 3).double()
    kernel.centre.data = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    shift = kernel.centre.detach()
    torch.testing.assert_close(kernel(x, y).to_dense(), base(x - shift, y - shift).to_dense())
    matrix = kernel(x).to_dense()
    assert torch.equal(matrix, matrix.T)


def test_input_prior_scale_replaces_only_the_first_layer_prior() -> None:
    import math

    _load("bo_offcentre")
    import _bo_surrogates as prototypes

    from gp_ntk.bo.priors import WEIGHT_PRIOR_SCALE

    for unit_variance in (True, False):
        scaled = prototypes.offcentre_kernel(4, input_prior_scale=2.5, unit_variance=unit_variance)
        network = scaled.base_kernel.base_kernel if unit_variance else scaled.base_kernel
        first, deeper = network.input_weight_variance_prior, network.weight_variance_prior
        assert float(first.scale) == 2.5 and float(deeper.scale) == WEIGHT_PRIOR_SCALE
        # same mode as the deeper layers' prior: exp(loc - scale^2)
        first_mode = math.exp(float(first.loc) - 2.5**2)
        assert math.isclose(first_mode, math.exp(float(deeper.loc) - WEIGHT_PRIOR_SCALE**2))


def test_input_prior_mode_moves_the_first_layer_prior_and_start() -> None:
    import torch

    _load("bo_offcentre")
    import _bo_surrogates as prototypes

    from gp_ntk.bo.priors import WEIGHT_PRIOR_SCALE

    network = prototypes.offcentre_kernel(4, input_prior_mode=0.5).base_kernel.base_kernel
    first, deeper = network.input_weight_variance_prior, network.weight_variance_prior
    assert float(first.scale) == WEIGHT_PRIOR_SCALE
    assert math.isclose(math.exp(float(first.loc) - WEIGHT_PRIOR_SCALE**2), 0.5, rel_tol=1e-6)
    torch.testing.assert_close(
        network.input_weight_variance, torch.full_like(network.input_weight_variance, 0.5)
    )
    # the deeper layers keep the default mode, 2
    assert math.isclose(math.exp(float(deeper.loc) - WEIGHT_PRIOR_SCALE**2), 2.0, rel_tol=1e-6)


@pytest.mark.parametrize("lower_scale", [3.0, 10.0])
def test_split_log_normal_prior_is_the_default_above_its_mode_and_broader_below(lower_scale: float) -> None:
    import pickle

    import torch

    _load("bo_offcentre")
    import _bo_surrogates as prototypes

    from gp_ntk.bo.priors import log_normal

    prior = prototypes.SplitLogNormalPrior(2.0, lower_scale, 1.0)
    # a density: integrates to one over v (quadrature in log v)
    log_v = torch.linspace(-1000.0, 12.0, 1_000_001, dtype=torch.float64)
    density = prior.log_prob(log_v.exp()).exp() * log_v.exp()
    assert math.isclose(float(torch.trapezoid(density, log_v)), 1.0, rel_tol=1e-6)
    # above the mode its gradient is the default LogNormal's; below, that of log-scale 3
    for value, reference in (
        (torch.tensor([2.5, 7.0, 40.0]), log_normal(2.0, 1.0)),
        (torch.tensor([0.01, 0.3, 1.9]), log_normal(2.0, lower_scale)),
    ):
        value = value.double().requires_grad_()
        (mine,) = torch.autograd.grad(prior.log_prob(value).sum(), value)
        theirs_at = value.detach().clone().requires_grad_()
        (theirs,) = torch.autograd.grad(reference.log_prob(theirs_at).sum(), theirs_at)
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)  # LogNormalPrior holds float32
    assert float(prior.log_prob(torch.tensor(2.0, dtype=torch.float64))) > float(
        prior.log_prob(torch.tensor(1.9, dtype=torch.float64))
    )
    # samples follow the density: the mass below the mode and below 0.1
    torch.manual_seed(0)
    samples = prior.rsample(torch.Size([100_000]))
    for cut in (0.01, 0.1, 1.0, 2.0, 6.0):
        exact = float(torch.trapezoid(density * (log_v.exp() < cut), log_v))
        assert abs(float((samples < cut).double().mean()) - exact) < 5e-3
    restored = pickle.loads(pickle.dumps(prior))
    torch.testing.assert_close(restored.log_prob(samples[:5]), prior.log_prob(samples[:5]))
    with pytest.raises(ValueError, match="lower_scale"):
        prototypes.SplitLogNormalPrior(2.0, -1.0, 1.0)
    # as the arm registers it: on the per-feature first-layer variances only
    network = prototypes.offcentre_kernel(4, input_prior_lower_scale=3.0).base_kernel.base_kernel
    assert isinstance(network.input_weight_variance_prior, prototypes.SplitLogNormalPrior)
    assert not isinstance(network.weight_variance_prior, prototypes.SplitLogNormalPrior)


def test_sparse_beyond_keeps_the_default_prior_up_to_that_many_inputs() -> None:
    _load("bo_offcentre")
    import _bo_surrogates as prototypes

    from gp_ntk.bo import bo_kernel

    default = bo_kernel("ntk", 10).base_kernel.base_kernel.input_weight_variance_prior
    same = prototypes.offcentre_kernel(
        10, sparse_beyond=10
    ).base_kernel.base_kernel.input_weight_variance_prior
    assert type(same) is type(default)
    assert (float(same.loc), float(same.scale)) == (float(default.loc), float(default.scale))
    wider = prototypes.offcentre_kernel(
        50, sparse_beyond=10
    ).base_kernel.base_kernel.input_weight_variance_prior
    assert isinstance(wider, prototypes.SplitLogNormalPrior)
    assert (float(wider.lower_scale), float(wider.upper_scale)) == (5.0, 1.0)
    with pytest.raises(ValueError, match="not both"):
        prototypes.offcentre_kernel(50, sparse_beyond=10, input_prior_lower_scale=3.0)


def test_nngp_ntk_mixture_interpolates_the_two_correlations() -> None:
    import gpytorch
    import torch

    import gp_ntk
    from gp_ntk.kernels import UnitVarianceKernel

    _load("bo_offcentre")
    import _bo_surrogates as prototypes

    network = gp_ntk.NTKKernel(depth=3, weight_variance=1.7, bias_variance=0.4, ard_num_dims=3).double()
    nngp = gp_ntk.NNGPKernel(depth=3, weight_variance=1.7, bias_variance=0.4, ard_num_dims=3).double()
    mixture = prototypes.NNGPNTKMixture(network, nngp_share=0.3).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    ntk_correlation = UnitVarianceKernel(network)(x, y).to_dense()
    nngp_correlation = UnitVarianceKernel(nngp)(x, y).to_dense()
    torch.testing.assert_close(mixture(x, y).to_dense(), 0.7 * ntk_correlation + 0.3 * nngp_correlation)
    for share, expected in ((1e-9, ntk_correlation), (1 - 1e-9, nngp_correlation)):
        mixture.nngp_share = share
        torch.testing.assert_close(mixture(x, y).to_dense(), expected, atol=1e-8, rtol=0)
    mixture.nngp_share = 0.5
    joint = mixture(torch.cat([x, y])).to_dense()
    torch.testing.assert_close(joint[:6, 6:], mixture(x, y).to_dense())
    torch.testing.assert_close(mixture(x[:4], y, diag=True), torch.diagonal(mixture(x[:4], y).to_dense()))
    assert torch.equal(mixture(x, x, diag=True), torch.ones(6, dtype=torch.float64))
    assert torch.equal(joint, joint.T) and torch.equal(
        torch.diagonal(joint), torch.ones(10, dtype=torch.float64)
    )
    assert torch.linalg.eigvalsh(joint).min() > -1e-10
    with pytest.raises(ValueError, match="nngp_share must be a float in"):
        prototypes.NNGPNTKMixture(network, nngp_share=1.5)
    with pytest.raises(ValueError, match="network must be a gp_ntk network kernel, got RBFKernel"):
        prototypes.NNGPNTKMixture(gpytorch.kernels.RBFKernel())
    wrapped = prototypes.offcentre_kernel(3, mix_nngp=True).base_kernel
    assert isinstance(wrapped, prototypes.NNGPNTKMixture) and isinstance(wrapped.network, gp_ntk.NTKKernel)


def test_noise_prior_arms_replace_only_the_likelihood() -> None:
    import torch
    from gpytorch.priors import GammaPrior, LogNormalPrior

    benchmark = _load("bo_offcentre")
    factories = benchmark.surrogates()
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = X.sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    gamma = factories["ntk-gamma-noise"](X, Y, bounds).likelihood.noise_covar
    low = factories["ntk-low-noise"](X, Y, bounds).likelihood.noise_covar
    assert isinstance(gamma.noise_prior, GammaPrior) and isinstance(low.noise_prior, LogNormalPrior)
    assert float(low.noise_prior.loc) == -7.0 and math.isclose(float(low.noise), math.exp(-8.0), rel_tol=1e-6)
    default = factories["ntk-relu"](X, Y, bounds)
    for name in ("ntk-gamma-noise", "ntk-low-noise"):
        kernel = factories[name](X, Y, bounds).covar_module
        assert type(kernel) is type(default.covar_module)
        assert kernel.state_dict().keys() == default.covar_module.state_dict().keys()


def test_compressed_outcome_arm_fits_standardised_bilog_targets() -> None:
    import torch

    benchmark = _load("bo_offcentre")
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = X.pow(2).sum(-1, keepdim=True).exp() * 50.0  # heavy upper tail, far from unit scale
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    model = benchmark.surrogates()["ntk-bilog"](X, Y, bounds)
    z = (Y - Y.mean()) / Y.std()
    compressed = z.sign() * z.abs().log1p()
    expected = (compressed - compressed.mean()) / compressed.std()
    assert torch.allclose(model.train_targets, expected.squeeze(-1), atol=1e-10)
    # a monotone map: the ordering of the outcomes, all acquisition cares about, is kept
    assert torch.equal(model.train_targets.argsort(), Y.squeeze(-1).argsort())
    back, _ = model.outcome_transform.untransform(model.train_targets.unsqueeze(-1))
    assert torch.allclose(back, Y, rtol=1e-10)


def test_incumbent_arm_moves_only_the_origin_to_the_best_point() -> None:
    import torch

    benchmark = _load("bo_offcentre")
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = -(X - 0.3).pow(2).sum(-1, keepdim=True)
    bounds = torch.tensor([[0.0, -1.0, 2.0], [1.0, 3.0, 2.5]], dtype=torch.float64)
    X = bounds[0] + (bounds[1] - bounds[0]) * X
    model = benchmark.surrogates()["ntk-incumbent"](X, Y, bounds)
    default = benchmark.surrogates()["ntk-relu"](X, Y, bounds)
    best = X[Y.squeeze(-1).argmax()]
    transform = model.input_transform
    assert torch.allclose(transform(best.unsqueeze(0)), torch.zeros(1, 3, dtype=torch.float64), atol=1e-12)
    # the same scale as the default's box transform: only the origin differs
    step = default.input_transform(X) - transform(X)
    assert torch.allclose(step, step[:1].expand_as(step), atol=1e-12)
    assert torch.allclose(step[0], default.input_transform(best.unsqueeze(0))[0], atol=1e-12)
    assert model.covar_module.state_dict().keys() == default.covar_module.state_dict().keys()
    # halfway: the origin between the centre of the box and the incumbent
    half = benchmark.surrogates()["ntk-incumbent-half"](X, Y, bounds)
    midpoint = 0.5 * (0.5 * (bounds[0] + bounds[1]) + best)
    assert torch.allclose(
        half.input_transform(midpoint.unsqueeze(0)), torch.zeros(1, 3, dtype=torch.float64), atol=1e-12
    )
    with pytest.raises(ValueError, match="pull"):
        benchmark._incumbent_centred(pull=1.5)


def test_two_origin_arm_mixes_the_default_kernel_seen_from_the_incumbent() -> None:
    import torch

    benchmark = _load("bo_offcentre")
    torch.manual_seed(3)
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = -(X - 0.7).pow(2).sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    model = benchmark.surrogates()["ntk-two-origins"](X, Y, bounds)
    default = benchmark.surrogates()["ntk-relu"](X, Y, bounds)
    mixture = model.covar_module.base_kernel
    assert mixture.raw_shifted_share.dtype == torch.float64
    best = X[Y.squeeze(-1).argmax()]
    assert torch.allclose(mixture.origin, default.input_transform(best.unsqueeze(0))[0], atol=1e-12)
    Z = default.input_transform(X)
    centred = default.covar_module.base_kernel(Z).to_dense()
    shifted = default.covar_module.base_kernel(Z - mixture.origin).to_dense()
    share = float(mixture.shifted_share)
    K = mixture(Z).to_dense()
    assert torch.allclose(K, (1 - share) * centred + share * shifted, atol=1e-12)
    # both terms have unit variance, so the mixture has too; and it is a covariance
    assert torch.allclose(mixture(Z, diag=True), torch.ones(12, dtype=torch.float64), atol=1e-12)
    assert torch.equal(K, K.mT) and float(torch.linalg.eigvalsh(K).min()) > -1e-10
    with pytest.raises(ValueError, match="shifted_share"):
        benchmark._bo_surrogates.OriginMixture(mixture.base, mixture.origin, shifted_share=1.0)


def test_activation_arms_change_only_the_activation() -> None:
    import torch

    import gp_ntk

    benchmark = _load("bo_offcentre")
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = X.sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    default = benchmark.surrogates()["default"](X, Y, bounds).covar_module
    arms = (
        ("ntk-erf", gp_ntk.activations.Erf),
        ("ntk-gelu", gp_ntk.activations.GELU),
        ("ntk-relu2", gp_ntk.activations.ArcCos),
    )
    for name, activation in arms:
        kernel = benchmark.surrogates()[name](X, Y, bounds).covar_module
        network = kernel.base_kernel.base_kernel
        assert isinstance(network, gp_ntk.NTKKernel) and network.depth == 3
        assert isinstance(network.activation, activation)
        assert kernel.state_dict().keys() == default.state_dict().keys()
    assert (
        benchmark.surrogates()["ntk-relu2"](
            X, Y, bounds
        ).covar_module.base_kernel.base_kernel.activation.order
        == 2
    )
    # the default is ReLU squared since 2026-12-08; the ReLU NTK and the levers measured on it keep ReLU
    assert default.base_kernel.base_kernel.activation == gp_ntk.activations.ArcCos(2)
    for name in ("ntk-relu", "ntk-depth2", "ntk-centre", "ntk-low-noise", "ntk-incumbent", "nngp-previous"):
        network = benchmark.surrogates()[name](X, Y, bounds).covar_module
        while not hasattr(network, "activation"):
            network = network.base_kernel
        assert isinstance(network.activation, gp_ntk.ReLU), name
    relu_arms = benchmark.surrogates()["ntk-relu-relu2-averaged"].candidates
    relu = relu_arms["relu"](X, Y, bounds).covar_module.base_kernel.base_kernel
    assert isinstance(relu.activation, gp_ntk.ReLU)


def test_bias_arms_move_only_the_bias_variance_start_and_prior_mode() -> None:
    import math

    import torch

    from gp_ntk.bo.priors import BIAS_PRIOR_SCALE

    benchmark = _load("bo_offcentre")
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = X.sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    default = benchmark.surrogates()["ntk-relu"](X, Y, bounds).covar_module.base_kernel.base_kernel
    for name, mode in (("ntk-bias-0.25", 0.25), ("ntk-bias-4", 4.0)):
        network = benchmark.surrogates()[name](X, Y, bounds).covar_module.base_kernel.base_kernel
        assert math.isclose(float(network.bias_variance), mode, rel_tol=1e-9)
        prior = network.bias_variance_prior
        assert float(prior.scale) == BIAS_PRIOR_SCALE
        assert math.isclose(math.exp(float(prior.loc) - BIAS_PRIOR_SCALE**2), mode, rel_tol=1e-6)
        # everything else as the default builds it
        assert torch.equal(network.input_weight_variance, default.input_weight_variance)
        assert float(network.weight_variance_prior.loc) == float(default.weight_variance_prior.loc)


def test_plus_rbf_arm_adds_botorch_rbf_on_the_same_scale_as_on_the_unit_box() -> None:
    import torch
    from botorch.models.transforms.input import Normalize
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior

    benchmark = _load("bo_offcentre")
    X = 3 + 2 * torch.rand(12, 4, dtype=torch.float64)
    Y = X.sum(-1, keepdim=True)
    bounds = torch.stack([3 * torch.ones(4), 5 * torch.ones(4)]).double()
    default = benchmark.surrogates()["ntk-relu"](X, Y, bounds)
    model = benchmark.surrogates()["ntk-plus-rbf"](X, Y, bounds)
    network, stationary = model.covar_module.kernels
    assert network.base_kernel.state_dict().keys() == default.covar_module.base_kernel.state_dict().keys()
    # the starts pass through softplus and back, exact only to rounding
    assert math.isclose(float(network.outputscale), 0.5, rel_tol=1e-12)
    assert math.isclose(float(stationary.outputscale), 0.5, rel_tol=1e-12)
    with torch.no_grad():
        inputs = model.input_transform(X)
        K = model.covar_module(inputs).to_dense()
        network_part = default.covar_module.base_kernel(inputs).to_dense()
        expected = 0.5 * network_part + 0.5 * stationary.base_kernel(inputs).to_dense()
        assert torch.allclose(K, expected, atol=1e-12)
        # at its prior mode the RBF term on [-1, 1]^d is BoTorch's default kernel on [0, 1]^d
        botorch_rbf = get_covar_module_with_dim_scaled_prior(ard_num_dims=4).double()
        unit = Normalize(4, bounds=bounds)(X)
        assert torch.allclose(
            stationary.base_kernel(inputs).to_dense(), botorch_rbf(unit).to_dense(), atol=1e-12
        )
    # GPyTorch's RBF distances are symmetric to rounding only
    assert torch.allclose(K, K.mT, atol=1e-12) and float(torch.linalg.eigvalsh(K).min()) > -1e-10


def test_map_objective_is_the_log_evidence_plus_log_priors_per_observation() -> None:
    import torch

    benchmark = _load("bo_offcentre")
    surrogates = sys.modules["_bo_surrogates"]
    X = torch.rand(9, 3, dtype=torch.float64)
    Y = torch.sin(4 * X).sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    model = benchmark.surrogates()["ntk-relu"](X, Y, bounds)
    with torch.no_grad():
        inputs = model.input_transform(X)
        covariance = model.covar_module(inputs).to_dense() + model.likelihood.noise * torch.eye(9).double()
        normal = torch.distributions.MultivariateNormal(model.mean_module(inputs), covariance)
        log_priors = sum(
            prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in model.named_priors()
        )
        expected = float((normal.log_prob(model.train_targets) + log_priors) / 9)
    assert math.isclose(surrogates.map_objective(model), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_evidence_selection_returns_the_fitted_candidate_with_most_evidence_and_resets_per_run() -> None:
    import torch

    from gp_ntk.bo import fit_bo_model

    benchmark = _load("bo_offcentre")
    surrogates = sys.modules["_bo_surrogates"]
    factories = benchmark.surrogates()
    assert "ntk-relu-or-erf" in benchmark.COLD_STARTED  # it warm-starts its candidates itself
    torch.manual_seed(3)
    X = torch.rand(14, 3, dtype=torch.float64)
    Y = torch.cos(6 * X).sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    candidates = {"relu": factories["ntk-relu"], "rbf": factories["rbf"]}
    evidence = {}
    for name, factory in candidates.items():
        model = factory(X[:10], Y[:10], bounds)
        assert fit_bo_model(model).succeeded
        evidence[name] = surrogates.map_objective(model)
    selection = surrogates.EvidenceSelection(candidates)
    chosen = selection(X[:10], Y[:10], bounds)
    best = max(evidence, key=evidence.get)
    assert selection.choices == [best]
    assert math.isclose(surrogates.map_objective(chosen), evidence[best], rel_tol=1e-6)
    # more data of the same run: each candidate starts from its own last fit
    first_fits = dict(selection._fitted)
    selection(X, Y, bounds)
    assert len(selection.choices) == 2
    for name, model in selection._fitted.items():
        assert model is not first_fits[name] and model.train_inputs[0].shape[0] == 14
    # data that do not extend the last call's: a new run
    selection(X[4:], Y[4:], bounds)
    assert len(selection.choices) == 1
    with pytest.raises(ValueError, match="candidates"):
        surrogates.EvidenceSelection({})


def _two_origins_fitted_alone(factories, surrogates):
    """Data with the optimum off the centre, and the arms standing for the two origins fitted alone on it."""
    import torch

    from gp_ntk.bo import fit_bo_model

    torch.manual_seed(5)
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = -(X - 0.8).pow(2).sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    alone, evidence = {}, {}
    for name, arm in (("centre", "ntk-relu"), ("incumbent", "ntk-incumbent")):
        alone[name] = factories[arm](X, Y, bounds)
        assert fit_bo_model(alone[name]).succeeded
        evidence[name] = surrogates.map_objective(alone[name])
    return X, Y, bounds, alone, evidence


def test_origin_by_evidence_arm_chooses_between_the_centre_and_the_incumbent() -> None:
    import torch

    benchmark = _load("bo_offcentre")
    surrogates = sys.modules["_bo_surrogates"]
    factories = benchmark.surrogates()
    selection = factories["ntk-origin-by-evidence"]
    assert isinstance(selection, surrogates.EvidenceSelection)
    assert sorted(selection.candidates) == ["centre", "incumbent"]
    assert "ntk-origin-by-evidence" in benchmark.COLD_STARTED
    X, Y, bounds, _, evidence = _two_origins_fitted_alone(factories, surrogates)
    best = X[Y.squeeze(-1).argmax()].unsqueeze(0)
    # far enough apart that rounding on another CPU cannot change the choice
    assert abs(evidence["centre"] - evidence["incumbent"]) > 1e-3
    chosen = selection(X, Y, bounds)
    winner = max(evidence, key=evidence.get)
    assert selection.choices == [winner]
    assert math.isclose(surrogates.map_objective(chosen), evidence[winner], rel_tol=1e-6)
    origin = best if winner == "incumbent" else torch.full_like(best, 0.5)
    assert torch.allclose(chosen.input_transform(origin), torch.zeros_like(best), atol=1e-12)


def test_mixture_posterior_draws_each_component_in_its_share_and_has_the_mixture_moments() -> None:
    import torch
    from botorch.posteriors import GPyTorchPosterior
    from gpytorch.distributions import MultivariateNormal

    _load("bo_offcentre")
    surrogates = sys.modules["_bo_surrogates"]
    torch.manual_seed(0)
    components = []
    for shift in (0.0, 3.0):
        root = torch.randn(4, 4, dtype=torch.float64)
        covariance = root @ root.T + 0.1 * torch.eye(4, dtype=torch.float64)
        mean = torch.randn(4, dtype=torch.float64) + shift
        components.append(GPyTorchPosterior(MultivariateNormal(mean, covariance)))
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    mixture = surrogates.MixturePosterior(components, weights)
    base = torch.randn(torch.Size([8]) + mixture.base_sample_shape, dtype=torch.float64)
    draws = mixture.rsample_from_base_samples(torch.Size([8]), base)
    own = [c.rsample_from_base_samples(torch.Size([8]), base) for c in components]
    # samples 0-1 (midpoints 1/16, 3/16 below 1/4) from the first component, 2-7 from the second
    assert torch.equal(draws[:2], own[0][:2]) and torch.equal(draws[2:], own[1][2:])
    assert (
        surrogates.MixturePosterior(components, torch.tensor([1.0, 0.0]))
        .rsample_from_base_samples(torch.Size([8]), base)
        .equal(own[0])
    )
    means = torch.stack([c.mean for c in components])
    variances = torch.stack([c.variance for c in components])
    expected_mean = 0.25 * means[0] + 0.75 * means[1]
    expected_variance = 0.25 * variances[0] + 0.75 * variances[1] + 0.25 * 0.75 * (means[0] - means[1]) ** 2
    assert torch.allclose(mixture.mean, expected_mean, rtol=1e-12, atol=1e-12)
    assert torch.allclose(mixture.variance, expected_variance, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="same, non-zero length"):
        surrogates.MixturePosterior(components, weights[:1])


def test_origin_averaged_arm_weighs_the_centre_and_the_incumbent_by_evidence() -> None:
    import torch

    benchmark = _load("bo_offcentre")
    surrogates = sys.modules["_bo_surrogates"]
    factories = benchmark.surrogates()
    average = factories["ntk-origin-averaged"]
    assert isinstance(average, surrogates.EvidenceAverage)
    assert sorted(average.candidates) == ["centre", "incumbent"]
    assert "ntk-origin-averaged" in benchmark.COLD_STARTED
    X, Y, bounds, alone, evidence = _two_origins_fitted_alone(factories, surrogates)
    model = average(X, Y, bounds)
    winner = max(evidence, key=evidence.get)
    assert average.choices == [winner]
    (shares,) = average.weights
    assert math.isclose(sum(shares.values()), 1.0, rel_tol=1e-12)
    # posterior model probabilities: odds exp(n * difference of per-observation objectives)
    odds = math.exp(12 * (evidence["centre"] - evidence["incumbent"]))
    assert math.isclose(shares["centre"] / shares["incumbent"], odds, rel_tol=1e-4)
    assert surrogates.is_model_average(model)
    test_X = torch.rand(5, 3, dtype=torch.float64)
    with torch.no_grad():
        mixed = model.posterior(test_X).mean
        expected = sum(shares[name] * alone[name].posterior(test_X).mean for name in alone)
    assert torch.allclose(mixed, expected, rtol=1e-5, atol=1e-6)
    # the benchmark's acquisition accepts the average (no cached Cholesky factor) and is finite
    acquisition = benchmark._acquisition(model, X, Y)
    assert torch.isfinite(acquisition(test_X.unsqueeze(1))).all()
    # data that do not extend the last call's start a new run; one candidate is no average
    single = surrogates.EvidenceAverage({"centre": factories["ntk-relu"]})
    plain = single(X[4:], Y[4:], bounds)
    assert single.weights == [{"centre": 1.0}] and not surrogates.is_model_average(plain)
    average(X[4:], Y[4:], bounds)
    assert len(average.weights) == 1 and len(average.choices) == 1


def _averaged_arm(name: str, seed: int):
    """An evidence-average arm of the benchmark (run cold, its candidates warm) and small data."""
    import torch

    benchmark = _load("bo_offcentre")
    average = benchmark.surrogates()[name]
    assert isinstance(average, sys.modules["_bo_surrogates"].EvidenceAverage)
    assert name in benchmark.COLD_STARTED
    torch.manual_seed(seed)
    X = torch.rand(12, 3, dtype=torch.float64)
    Y = -(X - 0.3).pow(2).sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    return average, X, Y, bounds


def _check_average(average, X, Y, bounds) -> None:
    """One call weighs every candidate (weights summing to 1) and gives a finite posterior."""
    import torch

    model = average(X, Y, bounds)
    (shares,) = average.weights
    assert sorted(shares) == sorted(average.candidates)
    assert math.isclose(sum(shares.values()), 1.0, rel_tol=1e-12)
    with torch.no_grad():
        assert torch.isfinite(model.posterior(torch.rand(4, 3, dtype=torch.float64)).mean).all()


def test_activation_averaged_arm_averages_relu_and_relu_squared() -> None:
    import gp_ntk

    average, X, Y, bounds = _averaged_arm("ntk-relu-relu2-averaged", seed=6)
    activations = {
        name: factory(X, Y, bounds).covar_module.base_kernel.base_kernel.activation
        for name, factory in average.candidates.items()
    }
    assert sorted(activations) == ["relu", "relu2"]
    assert isinstance(activations["relu"], gp_ntk.activations.ReLU)
    assert isinstance(activations["relu2"], gp_ntk.activations.ArcCos) and activations["relu2"].order == 2
    _check_average(average, X, Y, bounds)


def test_matern_averaged_arm_averages_the_default_and_matern() -> None:
    from gpytorch.kernels import MaternKernel

    import gp_ntk

    average, X, Y, bounds = _averaged_arm("ntk-matern-averaged", seed=7)
    kernels = {name: factory(X, Y, bounds).covar_module for name, factory in average.candidates.items()}
    assert sorted(kernels) == ["matern", "relu"]
    assert isinstance(kernels["relu"].base_kernel.base_kernel, gp_ntk.NTKKernel)
    assert isinstance(kernels["matern"].base_kernel, MaternKernel) and kernels["matern"].base_kernel.nu == 2.5
    _check_average(average, X, Y, bounds)


def test_bo_features_quick_run_reports_every_activation() -> None:
    results = _load("bo_features").main(["--quick", "--points", "8"])
    assert set(results) == {"ReLU", "ReLU squared (default)"}
    for errors in results.values():
        assert set(errors) == {256, 1024}
        assert all(math.isfinite(value) and 0 < value < 2 for value in errors.values())


def test_bo_step_times_every_surrogate_cold_and_warm() -> None:
    results = _load("bo_step").main(
        ["--n", "8", "--dim", "3", "--repeats", "1", "--restarts", "1", "--raw-samples", "8", "--calls", "2"]
    )
    medians, ratios = results[8]["medians"], results[8]["ratios"]
    assert set(medians) == {
        "rbf",
        "default",
        "ntk-unit",
        "default-two-blocks",
        "default-warm",
        "rbf-warm",
        "default-two-blocks-warm",
        "relu",
        "relu-warm",
    }
    for name in ("rbf", "default", "default-warm", "rbf-warm", "default-two-blocks", "relu", "relu-warm"):
        assert all(math.isfinite(value) and value > 0 for value in medians[name]), name
        # the raw samples are one evaluation, L-BFGS adds at least one more
        assert results[8]["acquisition_calls"][name] >= 2, name
        assert math.isfinite(results[8]["call_seconds"][name]) and results[8]["call_seconds"][name] > 0, name
        assert math.isfinite(results[8]["mll_seconds"][name]) and results[8]["mll_seconds"][name] > 0, name
    assert ratios["rbf"] == 1.0 and results[8]["call_ratios"]["rbf"] == 1.0
