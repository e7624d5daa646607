"""Empirical NTKs against a brute-force oracle, across implementations, modes and model kinds."""

from __future__ import annotations

import math
import pickle

import gpytorch
import pytest
import torch
from torch import nn

import gp_ntk
from gp_ntk.empirical import (
    EmpiricalNTKKernel,
    empirical_ntk,
    empirical_ntk_diagonal,
    empirical_ntk_monte_carlo,
    linearize,
)

IMPLEMENTATIONS = ("jacobian", "ntvp", "structured", "auto")
MODES = ("full", "trace", "diagonal")
TOL = 1e-10


def oracle(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``(n1, n2, O, O)`` from per-sample, per-output ``torch.autograd.grad``, flattened, Gram."""
    params = [p for p in model.parameters() if p.requires_grad]

    def rows(x: torch.Tensor) -> torch.Tensor:
        found = []
        for i in range(x.shape[0]):
            out = model(x[i : i + 1]).reshape(-1)
            for o in range(out.numel()):
                grads = torch.autograd.grad(out[o], params, retain_graph=True, allow_unused=True)
                found.append(
                    torch.cat(
                        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]
                    )
                )
        return torch.stack(found).reshape(x.shape[0], -1, found[0].numel())

    return torch.einsum("aop,bqp->aboq", rows(x1), rows(x2))


def reduce(full: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "full":
        return full
    diagonal = torch.diagonal(full, dim1=2, dim2=3)
    return diagonal.mean(-1) if mode == "trace" else diagonal


class TiedNet(nn.Module):
    """One Linear applied twice, and a weight shared by two Linear modules."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.first = nn.Linear(4, 6, bias=False)
        self.second = nn.Linear(4, 6)
        self.second.weight = self.first.weight
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.tanh(self.inner(torch.tanh(self.inner(x))))
        return self.out(torch.tanh(self.first(h)) + torch.sin(self.second(x)))


class DirectUse(nn.Module):
    """A Linear's weight also used outside the layer: the structured rule must not be kept."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.layer(x)) + x @ self.layer.weight)


def make_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(
            nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 12), nn.ReLU(inplace=True), nn.Linear(12, 3)
        )
        return model, (5,)
    if name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 3, 3, stride=2, dilation=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(27, 2),
        )
        return model, (2, 8, 8)
    if name == "conv1d":
        model = nn.Sequential(
            nn.Conv1d(2, 3, 3, padding=2, dilation=2), nn.Tanh(), nn.Flatten(), nn.Linear(18, 2)
        )
        return model, (2, 6)
    if name == "batchnorm":
        model = nn.Sequential(
            nn.Conv2d(1, 3, 3),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(12, 4),
            nn.BatchNorm1d(4),
        )
        with torch.no_grad():
            for module in (model[1], model[5]):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
        return model.eval(), (1, 4, 4)
    if name == "tied":
        return TiedNet(), (4,)
    if name == "frozen":
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
        model[2].weight.requires_grad_(False)
        model[0].bias.requires_grad_(False)
        return model, (4,)
    if name == "image_output":
        # image inputs and a (2, 3)-shaped output per sample, flattened to O = 6
        model = nn.Sequential(
            nn.Conv2d(3, 2, 2), nn.Softplus(), nn.Flatten(), nn.Linear(2 * 4 * 4, 6), nn.Unflatten(1, (2, 3))
        )
        return model, (3, 5, 5)
    if name == "sequence":
        # a Linear on (n, S, d): several positions per sample
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2), nn.Flatten())
        return model, (2, 4)
    if name == "direct":
        return DirectUse(), (3,)
    if name == "network_mlp":
        kernel = gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
        net = gp_ntk.networks.from_kernel(
            kernel, 3, 7, out_features=2, generator=torch.Generator().manual_seed(1)
        )
        return net, (3,)
    raise AssertionError(name)


MODELS = (
    "mlp",
    "cnn",
    "conv1d",
    "batchnorm",
    "tied",
    "frozen",
    "image_output",
    "sequence",
    "direct",
    "network_mlp",
)


@pytest.mark.parametrize("name", MODELS)
def test_matches_the_oracle(name: str, float64_default) -> None:
    model, shape = make_model(name)
    x1, x2 = torch.randn(3, *shape), torch.randn(2, *shape)
    reference = oracle(model, x1, x2)
    for implementation in IMPLEMENTATIONS:
        for mode in MODES:
            kernel = empirical_ntk(model, x1, x2, mode=mode, implementation=implementation)
            expected = reduce(reference, mode)
            assert kernel.shape == expected.shape
            error = float((kernel - expected).abs().max())
            assert error < TOL * (1 + float(expected.abs().max())), (implementation, mode, error)


@pytest.mark.parametrize("name", ("mlp", "cnn", "tied", "sequence"))
def test_symmetric_chunked_and_diagonal(name: str, float64_default) -> None:
    model, shape = make_model(name)
    x = torch.randn(5, *shape)
    reference = oracle(model, x, x)
    for implementation in IMPLEMENTATIONS:
        for chunk_size in (1, 2, None):
            full = empirical_ntk(model, x, mode="full", implementation=implementation, chunk_size=chunk_size)
            torch.testing.assert_close(full, reference, rtol=0, atol=TOL)
        # exact symmetry of the returned matrix: the blocks below the diagonal are the transposes
        assert torch.equal(full, full.permute(1, 0, 3, 2))
        for mode in MODES:
            diagonal = empirical_ntk_diagonal(
                model, x, mode=mode, implementation=implementation, chunk_size=2
            )
            expected = reduce(reference, mode)[torch.arange(5), torch.arange(5)]
            torch.testing.assert_close(diagonal, expected, rtol=0, atol=TOL)


def test_frozen_parameters_left_out_and_buffers_used(float64_default) -> None:
    model, shape = make_model("frozen")
    x = torch.randn(3, *shape)
    kernel = empirical_ntk(model, x, mode="trace")
    model[2].weight.requires_grad_(True)
    assert float((empirical_ntk(model, x, mode="trace") - kernel).abs().max()) > 1e-3
    # parameter_names selects explicitly
    names = ["4.weight", "4.bias"]
    last = empirical_ntk(model, x, mode="full", parameter_names=names)
    h = torch.tanh(model[2](torch.tanh(model[0](x)))).detach()
    expected = (h @ h.T + 1)[:, :, None, None] * torch.eye(2)
    torch.testing.assert_close(last, expected, rtol=0, atol=TOL)


def test_direct_use_falls_back(float64_default) -> None:
    # the oracle test covers the numbers; here: the rule for layer.weight is dropped, the other kept
    from gp_ntk.empirical import _make_plan, _trainable

    model, shape = make_model("direct")
    params = _trainable(model)
    plan = _make_plan(model, params, torch.randn(2, *shape), "structured")
    assert "layer.weight" not in plan.structured
    assert {"layer.bias", "out.weight", "out.bias"} <= set(plan.structured)


def test_refusals(float64_default) -> None:
    model, shape = make_model("batchnorm")
    x = torch.randn(3, *shape)
    model.train()
    with pytest.raises(ValueError, match="model.eval"):
        empirical_ntk(model, x)
    with pytest.raises(ValueError, match="model.eval"):
        EmpiricalNTKKernel(model)
    model.eval()
    with pytest.raises(ValueError, match="mode"):
        empirical_ntk(model, x, mode="trace_axes")
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(model, x, implementation="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        empirical_ntk(model, x, chunk_size=0)
    with pytest.raises(ValueError, match="dtype"):
        empirical_ntk(model, x.float())
    with pytest.raises(ValueError, match="input shape"):
        empirical_ntk(model, x, torch.randn(2, 1, 5, 5))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        empirical_ntk(frozen, torch.randn(2, 2))
    with pytest.raises(ValueError, match="batch dimension"):
        empirical_ntk(nn.Sequential(nn.Linear(2, 2), nn.Flatten(0)), torch.randn(3, 2))


def test_float32_agrees_with_float64() -> None:
    model, shape = make_model("cnn")
    x = torch.randn(4, *shape)
    single = empirical_ntk(model, x, mode="full")
    double = empirical_ntk(model.double(), x.double(), mode="full")
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), double, rtol=1e-4, atol=1e-4 * float(double.abs().max()))


# ---------------------------------------------------------------------------------- linearisation


def test_linearize(float64_default) -> None:
    model, shape = make_model("cnn")
    x = torch.randn(3, *shape)
    lin = linearize(model)
    torch.testing.assert_close(lin(x), model(x), rtol=0, atol=1e-12)
    # linear in the shift: f_lin(theta0 + t d) = f(theta0) + t J d, checked against central differences
    shifts = [torch.randn_like(p) * 1e-3 for p in lin.params]
    with torch.no_grad():
        for p, d in zip(lin.params, shifts):
            p.add_(d)
    once = lin(x)
    with torch.no_grad():
        for p, d in zip(lin.params, shifts):
            p.add_(d)
    twice = lin(x)
    base = model(x)
    torch.testing.assert_close(twice - base, 2 * (once - base), rtol=1e-9, atol=1e-12)
    params = [p for p in model.parameters()]
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, shifts):
            p.add_(eps / 1e-3 * d)
        plus = model(x)
        for p, d in zip(params, shifts):
            p.sub_(2 * eps / 1e-3 * d)
        minus = model(x)
        for p, d in zip(params, shifts):
            p.add_(eps / 1e-3 * d)
    directional = (plus - minus) / (2 * eps)
    torch.testing.assert_close((once - base) / 1e-3, directional, rtol=1e-6, atol=1e-8)
    # the gradient w.r.t. theta of sum(v * f_lin) is J^T v: its inner product with itself is v^T Theta v
    v = torch.randn_like(base)
    grads = torch.autograd.grad((v * lin(x)).sum(), list(lin.params))
    quadratic = sum((g * g).sum() for g in grads)
    theta = empirical_ntk(model, x, mode="full")
    torch.testing.assert_close(quadratic, torch.einsum("ao,aboq,bq->", v, theta, v), rtol=1e-10, atol=0)


# ---------------------------------------------------------------------------------- GPyTorch kernel


class _GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, kernel):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def test_kernel_dense_diag_lazy_and_full(float64_default) -> None:
    model, shape = make_model("cnn")
    x1, x2 = torch.randn(6, math.prod(shape)), torch.randn(4, math.prod(shape))
    kernel = EmpiricalNTKKernel(model, input_shape=shape)
    expected = empirical_ntk(model, x1.reshape(6, *shape), x2.reshape(4, *shape), mode="trace")
    torch.testing.assert_close(kernel(x1, x2).to_dense(), expected, rtol=0, atol=TOL)
    self_kernel = empirical_ntk(model, x1.reshape(6, *shape), mode="trace")
    torch.testing.assert_close(kernel(x1, diag=True), torch.diagonal(self_kernel), rtol=0, atol=TOL)
    with gp_ntk.settings.lazy_evaluation("always", block_elements=8):
        lazy = kernel(x1, x1).evaluate_kernel()
        assert isinstance(lazy, gp_ntk.BlockedKernelLinearOperator)
        rhs = torch.randn(6, 2)
        torch.testing.assert_close(lazy @ rhs, self_kernel @ rhs, rtol=0, atol=TOL)
        torch.testing.assert_close(lazy.diagonal(), torch.diagonal(self_kernel), rtol=0, atol=TOL)
        cross = kernel(x1, x2).evaluate_kernel()
        torch.testing.assert_close(cross @ rhs[:4], expected @ rhs[:4], rtol=0, atol=TOL)
    full = EmpiricalNTKKernel(model, mode="full", input_shape=shape)
    matrix = full(x1, x2).to_dense()
    reference = empirical_ntk(model, x1.reshape(6, *shape), x2.reshape(4, *shape), mode="full")
    assert matrix.shape == (12, 8)
    # interleaved rows: (i, o) -> i * O + o
    torch.testing.assert_close(matrix[2 * 3 + 1, 2 * 2 + 0], reference[3, 2, 1, 0], rtol=0, atol=TOL)
    torch.testing.assert_close(
        full(x1, diag=True)[2 * 3 + 1], reference.new_tensor(0.0) + self_full_entry(model, x1, shape)
    )
    with pytest.raises(ValueError, match="features"):
        kernel(torch.randn(3, 5)).to_dense()


def self_full_entry(model, x1, shape):
    return empirical_ntk(model, x1.reshape(6, *shape), mode="full")[3, 3, 1, 1]


def test_kernel_frozen_in_exact_gp_and_pickles(float64_default) -> None:
    model, shape = make_model("mlp")
    x = torch.randn(12, *shape)
    y = torch.sin(x[:, 0])
    kernel = EmpiricalNTKKernel(model)
    gp = _GP(x, y, kernel)
    before = {n: p.clone() for n, p in kernel.network.named_parameters()}
    optimizer = torch.optim.Adam(gp.parameters(), lr=0.1)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(gp.likelihood, gp)
    for _ in range(3):
        optimizer.zero_grad()
        loss = -mll(gp(x), y)
        loss.backward()
        optimizer.step()
    for n, p in kernel.network.named_parameters():
        assert torch.equal(p, before[n])
    gp.eval()
    test_x = torch.randn(5, *shape)
    with torch.no_grad():
        mean = gp(test_x).mean
        restored = pickle.loads(pickle.dumps(gp))
        restored.eval()
        torch.testing.assert_close(restored(test_x).mean, mean, rtol=0, atol=1e-12)
    # the network the kernel copied is independent of the original; refresh takes the new weights
    with torch.no_grad():
        model[0].weight.mul_(2)
        copied = empirical_ntk(kernel.network, x, mode="trace", parameter_names=kernel.parameter_names)
    torch.testing.assert_close(kernel(x).to_dense(), copied, rtol=0, atol=TOL)
    assert float((copied - empirical_ntk(model, x, mode="trace")).abs().max()) > 1e-3
    kernel.refresh(model)
    torch.testing.assert_close(kernel(x).to_dense(), empirical_ntk(model, x, mode="trace"), rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------- slow: Monte Carlo, widths


@pytest.mark.slow
def test_monte_carlo_error_falls_as_one_over_sqrt_samples(float64_default) -> None:
    model, shape = make_model("mlp")
    x = torch.randn(6, *shape)
    exact = empirical_ntk(model, x, mode="full")
    counts = [16, 64, 256, 1024]
    errors = []
    for count in counts:
        trials = [
            empirical_ntk_monte_carlo(
                model, x, num_samples=count, generator=torch.Generator().manual_seed(seed)
            )
            for seed in range(8)
        ]
        errors.append(sum(float((t - exact).norm() / exact.norm()) ** 2 for t in trials) ** 0.5 / 8**0.5)
    slope = torch.linalg.lstsq(
        torch.stack([torch.log(torch.tensor(counts, dtype=torch.float64)), torch.ones(4)], 1),
        torch.log(torch.tensor(errors)).unsqueeze(-1),
    ).solution[0, 0]
    assert -0.65 < float(slope) < -0.35, (errors, float(slope))
    # unbiased: the mean of many estimates approaches the kernel faster than any one of them
    mean = (
        sum(
            empirical_ntk_monte_carlo(model, x, num_samples=256, generator=torch.Generator().manual_seed(s))
            for s in range(16)
        )
        / 16
    )
    assert float((mean - exact).norm() / exact.norm()) < 0.5 * errors[2]
    trace = empirical_ntk_monte_carlo(
        model, x, num_samples=64, mode="trace", generator=torch.Generator().manual_seed(0)
    )
    full = empirical_ntk_monte_carlo(
        model, x, num_samples=64, mode="full", generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(trace, reduce(full, "trace"))


def width_errors(widths, seeds, depth=2):
    kernel = gp_ntk.NTKKernel(depth=depth, activation="relu", weight_variance=2.0, bias_variance=0.1)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(5))
    exact = kernel(x).to_dense().detach()
    errors = []
    for width in widths:
        squared = 0.0
        for seed in range(seeds):
            net = gp_ntk.networks.from_kernel(kernel, 3, width, generator=torch.Generator().manual_seed(seed))
            empirical = empirical_ntk(net, x, mode="trace")
            squared += float((empirical - exact).norm() / exact.norm()) ** 2
        errors.append((squared / seeds) ** 0.5)
    return errors


@pytest.mark.slow
def test_width_convergence_to_the_analytic_ntk(float64_default) -> None:
    widths = [32, 128, 512, 2048]
    errors = width_errors(widths, seeds=6)
    slope = torch.linalg.lstsq(
        torch.stack([torch.log(torch.tensor(widths, dtype=torch.float64)), torch.ones(4)], 1),
        torch.log(torch.tensor(errors)).unsqueeze(-1),
    ).solution[0, 0]
    assert -0.7 < float(slope) < -0.3, (errors, float(slope))
    assert errors[-1] < 0.1


def ntk_change_during_training(width: int, steps: int = 150, lr: float = 0.5) -> float:
    kernel = gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
    net = gp_ntk.networks.from_kernel(kernel, 2, width, generator=torch.Generator().manual_seed(width))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=generator)
    y = torch.sin(2 * x[:, 0]) * x[:, 1]
    before = empirical_ntk(net, x, mode="trace")
    optimizer = torch.optim.SGD(net.parameters(), lr=lr / 16)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * ((net(x) - y) ** 2).sum()).backward()
        optimizer.step()
    after = empirical_ntk(net, x, mode="trace")
    return float((after - before).norm() / before.norm())


@pytest.mark.slow
def test_ntk_moves_less_for_wider_networks(float64_default) -> None:
    changes = [ntk_change_during_training(width) for width in (16, 64, 256, 1024)]
    assert all(a > b for a, b in zip(changes, changes[1:])), changes
    assert changes[-1] < 0.25 * changes[0], changes


# ---------------------------------------------------------------------------------- slow: scripts


def _load_script(folder: str, name: str):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gp_ntk_{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_quick(tmp_path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    try:
        results = _load_script("examples", "empirical_ntk").main(["--quick", "--output-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    for name in ("ntk_spectra.png", "ntk_calibration.png", "ntk_change_vs_width.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    # ten classes: kernel regression with either kernel is far above chance
    assert results["regression init"] > 0.5 and results["regression trained"] > 0.5
    changes = results.pop("ntk change by width")
    assert len(changes) == 2 and all(0 < c < math.inf for c in changes)
    assert all(math.isfinite(v) for v in results.values())


@pytest.mark.slow
def test_benchmark_quick(capsys) -> None:
    threads = torch.get_num_threads()
    try:
        rows = _load_script("benchmarks", "empirical_ntk").main(
            ["--quick", "--sizes", "4", "--modes", "trace"]
        )
    finally:
        torch.set_num_threads(threads)
    assert len(rows) == 2 * 3
    for row in rows:
        assert row["ok"], row
        assert row["seconds"] > 0 and math.isfinite(row["checksum"])
    # the three methods compute the same kernel
    for model in ("mlp", "cnn"):
        sums = [row["checksum"] for row in rows if row["model"] == model]
        assert max(sums) - min(sums) < 1e-3 * max(abs(s) for s in sums)


class BatchSecond(nn.Module):
    """A Linear applied to a (S, n, d) tensor: its first axis is not the samples."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 4)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.layer(x.transpose(0, 1)))  # (2, n, 4)
        return self.out(h.transpose(0, 1).flatten(1))


def test_layer_with_samples_not_first_falls_back(float64_default) -> None:
    model = BatchSecond()
    # two samples and two positions: the shapes alone cannot tell the axes apart
    x1, x2 = torch.randn(2, 2, 3), torch.randn(2, 2, 3)
    expected = oracle(model, x1, x2)
    kernel = empirical_ntk(model, x1, x2, mode="full", implementation="structured")
    torch.testing.assert_close(kernel, expected, rtol=0, atol=TOL)


def test_global_rng_untouched(float64_default) -> None:
    model, shape = make_model("mlp")
    x = torch.randn(3, *shape)
    state = torch.get_rng_state()
    empirical_ntk(model, x)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "options", [{"memory_budget": 1000}, {"implementation": "ntvp"}, {"implementation": "jacobian"}]
)
def test_lazy_kernel_recomputing_blocks(options, float64_default) -> None:
    # features not kept with the points (over budget, or ntvp): every block recomputes them
    model, shape = make_model("tied")
    x = torch.randn(7, *shape)
    kernel = EmpiricalNTKKernel(model, **options)
    expected = empirical_ntk(model, x, mode="trace")
    rhs = torch.randn(7, 3)
    with gp_ntk.settings.lazy_evaluation("always", block_elements=10):
        lazy = kernel(x, x).evaluate_kernel()
        assert isinstance(lazy, gp_ntk.BlockedKernelLinearOperator)
        torch.testing.assert_close(lazy @ rhs, expected @ rhs, rtol=0, atol=TOL)
        torch.testing.assert_close(lazy.to_dense(), expected, rtol=0, atol=TOL)
