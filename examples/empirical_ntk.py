"""The tangent kernel of a small MLP on scikit-learn's digits, at initialisation and after training.

* eigenvalue spectra of the empirical NTK on the training set (``ntk_spectra.png``);
* kernel regression with each kernel (one-hot targets, ridge) against the trained network;
* a GP per class with ``ScaleKernel(EmpiricalNTKKernel(network))``: accuracy of the posterior
  means, and the calibration of the predictive intervals on held-out digits
  (``ntk_calibration.png``).

    python examples/empirical_ntk.py [--quick] [--output-dir examples/output]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import gpytorch
import matplotlib
import torch
from sklearn.datasets import load_digits
from torch import nn
from tqdm import tqdm

import gp_ntk

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NUM_CLASSES = 10
LEVELS = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)


def load(num_train: int, num_test: int, generator: torch.Generator):
    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float64) / 16.0
    y = torch.as_tensor(digits.target)
    order = torch.randperm(x.shape[0], generator=generator)
    train, test = order[:num_train], order[num_train : num_train + num_test]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(0.1)
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def make_network(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, NUM_CLASSES)
    ).double()


def train(network: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in tqdm(range(epochs), desc="training the network", leave=False):
        for batch in torch.randperm(x.shape[0], generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(network(x[batch]), y[batch]).backward()
            optimizer.step()
    network.eval()


def one_hot(y: torch.Tensor) -> torch.Tensor:
    return nn.functional.one_hot(y, NUM_CLASSES).double() - 1.0 / NUM_CLASSES


def kernel_regression_accuracy(k_train, k_test, y_train, y_test, ridge: float = 1e-3) -> float:
    scale = torch.diagonal(k_train).mean()
    weights = torch.linalg.solve(
        k_train + ridge * scale * torch.eye(k_train.shape[0], dtype=k_train.dtype), one_hot(y_train)
    )
    return float(((k_test @ weights).argmax(-1) == y_test).double().mean())


def gp_per_class(network, x_train, y_train, x_test, y_test, iterations: int):
    """Posterior means ``(n_test, 10)`` and the empirical coverage of central intervals at LEVELS."""
    kernel = gp_ntk.EmpiricalNTKKernel(network, mode="trace")
    means, covered, nll = [], torch.zeros(len(LEVELS), dtype=torch.float64), 0.0
    for c in tqdm(range(NUM_CLASSES), desc="one GP per class", leave=False):
        target = (y_train == c).double()
        model = gp_ntk.ExactGPModel(x_train, target, kernel, standardize_inputs=False)
        model.covar_module.outputscale = 1.0 / float(kernel(x_train[:50], diag=True).mean())
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        model.train()
        for _ in range(iterations):
            optimizer.zero_grad()
            (-mll(model(x_train), target)).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            predictive = model.likelihood(model(x_test))
            mean, std = predictive.mean, predictive.variance.sqrt()
        truth = (y_test == c).double()
        z = ((truth - mean) / std).abs()
        normal = torch.distributions.Normal(0.0, 1.0)
        half_widths = normal.icdf(0.5 + LEVELS / 2)
        covered += (z.unsqueeze(0) <= half_widths.unsqueeze(1)).double().mean(1)
        nll += float(-torch.distributions.Normal(mean, std).log_prob(truth).mean())
        means.append(mean)
    means = torch.stack(means, -1)
    accuracy = float((means.argmax(-1) == y_test).double().mean())
    return accuracy, covered / NUM_CLASSES, nll / NUM_CLASSES


def ntk_change_vs_width(x, y, widths, steps: int, seeds: int = 3) -> list[float]:
    """Relative change of the trace NTK on ``x`` over ``steps`` of gradient descent (mean over seeds).

    NTK-parameterised networks (``gp_ntk.networks.NetworkMLP``) with one learning rate for all
    widths: the lazy-training regime, where the kernel stays closer to its initial value the
    wider the network.
    """
    changes = []
    # one scalar output (the digit's value, standardised) keeps the per-point Jacobians small
    targets = (y.double() - 4.5) / 3.0
    for width in tqdm(widths, desc="NTK change vs width", leave=False):
        relative = []
        for seed in range(seeds):
            net = gp_ntk.networks.NetworkMLP(
                64,
                width,
                depth=2,
                weight_variance=2.0,
                bias_variance=0.1,
                generator=torch.Generator().manual_seed(1000 * seed + width),
                dtype=torch.float64,
            )
            before = gp_ntk.empirical_ntk(net, x, mode="trace")
            optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
            for _ in range(steps):
                optimizer.zero_grad()
                (0.5 * ((net(x) - targets) ** 2).mean()).backward()
                optimizer.step()
            after = gp_ntk.empirical_ntk(net, x, mode="trace")
            relative.append(float((after - before).norm() / before.norm()))
        changes.append(sum(relative) / seeds)
    return changes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    num_train, num_test, width, epochs, iterations = (
        (150, 150, 64, 10, 12) if args.quick else (800, 600, 512, 40, 40)
    )
    x_train, y_train, x_test, y_test = load(num_train, num_test, torch.Generator().manual_seed(0))
    network = make_network(width)
    network.eval()
    started = time.perf_counter()

    kernels = {}
    initial = (
        gp_ntk.empirical_ntk(network, x_train, mode="trace"),
        gp_ntk.empirical_ntk(network, x_test, x_train, mode="trace"),
    )
    kernels["init"] = initial
    gp_init = gp_per_class(network, x_train, y_train, x_test, y_test, iterations)
    train(network.train(), x_train, y_train, epochs)
    with torch.no_grad():
        network_accuracy = float((network(x_test).argmax(-1) == y_test).double().mean())
    kernels["trained"] = (
        gp_ntk.empirical_ntk(network, x_train, mode="trace"),
        gp_ntk.empirical_ntk(network, x_test, x_train, mode="trace"),
    )
    gp_trained = gp_per_class(network, x_train, y_train, x_test, y_test, iterations)

    results = {"network": network_accuracy}
    print(f"digits: {num_train} train / {num_test} test, MLP 64-{width}-{width}-10, {epochs} epochs of Adam")
    print(f"{'predictor':<34} {'test acc':>9} {'cov@95%':>8} {'mean NLL':>9}")
    print(f"{'trained network':<34} {network_accuracy:>9.3f}")
    for name, (k_train, k_test) in kernels.items():
        accuracy = kernel_regression_accuracy(k_train, k_test, y_train, y_test)
        results[f"regression {name}"] = accuracy
        print(f"{'NTK kernel regression, ' + name:<34} {accuracy:>9.3f}")
    for name, (accuracy, coverage, nll) in (("init", gp_init), ("trained", gp_trained)):
        results[f"gp {name}"] = accuracy
        results[f"coverage95 {name}"] = float(coverage[-1])
        print(
            f"{'GP, EmpiricalNTKKernel ' + name:<34} {accuracy:>9.3f} {float(coverage[-1]):>8.3f} {nll:>9.3f}"
        )
    change = float((kernels["trained"][0] - kernels["init"][0]).norm() / kernels["init"][0].norm())
    print(f"relative change of the training-set NTK: {change:.3f}; {time.perf_counter() - started:.1f} s")

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, (k_train, _) in kernels.items():
        eigenvalues = torch.linalg.eigvalsh(k_train).flip(0).clamp_min(1e-16)
        axis.loglog(torch.arange(1, len(eigenvalues) + 1), eigenvalues / eigenvalues.sum(), label=name)
    axis.set_xlabel("index")
    axis.set_ylabel("eigenvalue / trace")
    axis.set_title("empirical NTK spectrum on the training digits")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.output_dir / "ntk_spectra.png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], "k:", label="ideal")
    for name, (_, coverage, _) in (("init", gp_init), ("trained", gp_trained)):
        axis.plot(LEVELS, coverage, "o-", label=f"GP, NTK at {name}")
    axis.set_xlabel("nominal coverage of the central interval")
    axis.set_ylabel("observed coverage (held-out digits)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.output_dir / "ntk_calibration.png", dpi=120)
    plt.close(figure)
    results["ntk change"] = change

    widths = [16, 64] if args.quick else [16, 64, 256, 1024]
    changes = ntk_change_vs_width(x_train[:48], y_train[:48], widths, steps=20 if args.quick else 100)
    print(
        "relative NTK change during training by width: "
        + ", ".join(f"{w}: {c:.4f}" for w, c in zip(widths, changes))
    )
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.loglog(widths, changes, "o-", label="measured")
    axis.loglog(widths, [changes[0] * math.sqrt(widths[0] / w) for w in widths], "k:", label="1/sqrt(width)")
    axis.set_xlabel("width")
    axis.set_ylabel("||NTK after - NTK before|| / ||NTK before||")
    axis.set_title("NTK-parameterised MLPs, gradient descent on digits")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.output_dir / "ntk_change_vs_width.png", dpi=120)
    plt.close(figure)
    results["ntk change by width"] = changes
    return results


if __name__ == "__main__":
    main()
