"""What a wide network predicts after training for time t, and how sure it is.

A 1-D regression problem with six points. The infinite ensemble of infinitely wide ReLU networks
trained by gradient descent (``gp_ntk.dynamics``, regime ``"ntk"``) is drawn as its mean +- 2
standard deviations at t = 0 (the prior), 10, 100 and infinity, with finite networks of the
same architecture (``gp_ntk.networks``, plain ``torch.optim.SGD``) trained alongside. A second
figure shows the training loss: the ensemble's expected loss, the finite networks' losses and the
analytic decay of each NTK eigenmode, exp(-2 eta lambda_i t / n): modes with large eigenvalues are
learnt first.

Run ``python examples/training_dynamics.py`` (``--quick`` for a fast check); the PNGs are written
to ``examples/output/``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk import dynamics  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "output"
TIMES = (0.0, 10.0, 100.0, None)


def problem(dtype=torch.float64):
    train_x = torch.tensor([-1.6, -1.1, -0.4, 0.2, 0.9, 1.5], dtype=dtype)[:, None]
    train_y = torch.sin(2.0 * train_x[:, 0]) + 0.3 * train_x[:, 0]
    grid = torch.linspace(-2.5, 2.5, 200, dtype=dtype)[:, None]
    return train_x, train_y, grid


def train_networks(kernel, train_x, train_y, grid, width, count, learning_rate, steps, seed):
    """Finite networks trained by full-batch gradient descent on (1/2n) sum (f - y)^2.

    Returns their outputs on ``grid`` after each number of ``steps`` (``(len(steps), count, m)``;
    ``math.inf`` is taken as the last finite entry) and their training losses at every step.
    """
    gen = torch.Generator().manual_seed(seed)
    finite = [s for s in steps if math.isfinite(s)]
    last = int(max(finite))
    snapshots = torch.zeros(len(steps), count, len(grid), dtype=train_x.dtype)
    losses = torch.zeros(count, last + 1, dtype=train_x.dtype)
    for b in tqdm(range(count), desc="training finite networks"):
        net = gp_ntk.networks.from_kernel(kernel, train_x.shape[-1], width, generator=gen)
        optimiser = torch.optim.SGD(net.parameters(), lr=learning_rate)
        for step in range(last + 1):
            with torch.no_grad():
                for i, s in enumerate(steps):
                    if s == step or (not math.isfinite(s) and step == last):
                        snapshots[i, b] = net(grid)
            loss = 0.5 * ((net(train_x) - train_y) ** 2).mean()
            losses[b, step] = loss.detach()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return snapshots, losses


def main(quick: bool = False) -> dict[str, Path]:
    torch.manual_seed(0)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    train_x, train_y, grid = problem()
    kernel = gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    ntk_train = kernel(train_x, train_x).to_dense().detach()
    n = len(train_y)
    # 0.4 of the largest stable rate: discrete steps follow the continuous-time flow closely
    learning_rate = 0.4 * dynamics.max_learning_rate(ntk_train)
    width, count = (256, 2) if quick else (512, 4)
    horizon = 200.0 if quick else 300.0  # "t = infinity" for the finite networks
    steps = [round(t / learning_rate) if t is not None else round(horizon / learning_rate) for t in TIMES]
    snapshots, losses = train_networks(
        kernel, train_x, train_y, grid, width, count, learning_rate, steps, seed=1
    )

    pred = dynamics.gradient_descent_mse_ensemble(kernel, train_x, train_y)
    fig, axes = plt.subplots(1, len(TIMES), figsize=(4 * len(TIMES), 3.4), sharey=True)
    for ax, t, nets in zip(axes, TIMES, snapshots):
        mvn = pred(grid, t=t, get="ntk")
        mean, std = mvn.mean.detach(), mvn.covariance_matrix.diagonal().detach().sqrt()
        ax.fill_between(grid[:, 0], mean - 2 * std, mean + 2 * std, alpha=0.25, label="ensemble ±2σ")
        ax.plot(grid[:, 0], mean, lw=2, label="ensemble mean")
        for b, f in enumerate(nets):
            ax.plot(
                grid[:, 0],
                f,
                lw=0.8,
                color="k",
                alpha=0.5,
                label=f"{count} networks, width {width}" if b == 0 else None,
            )
        ax.scatter(train_x[:, 0], train_y, color="C3", zorder=5, label="training data")
        ax.set_title("t = ∞" if t is None else f"t = {t:g}")
        ax.set_xlabel("x")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Wide ReLU networks (depth 2) trained by gradient descent: ensemble vs finite networks")
    fig.tight_layout()
    paths = {"ensemble": OUTPUT / "training_dynamics_ensemble.png"}
    fig.savefig(paths["ensemble"], dpi=110)
    plt.close(fig)

    # training loss: mode i of f_t - y is e^{-eta lambda_i t / n} v_i^T (f_0 - y), so it contributes
    # E[(v_i^T (f_0 - y))^2] e^{-2 eta lambda_i t / n} / (2n), with E[.] = (v_i^T y)^2 + v_i^T K v_i
    # (K the NNGP): the modes sum to the ensemble's expected loss
    evals, evecs = torch.linalg.eigh(ntk_train)
    nngp_train = kernel.nngp_and_ntk(train_x, train_x)[0].detach()
    times = torch.arange(losses.shape[1], dtype=train_x.dtype) * learning_rate
    t_axis = times[1:]
    modes = (evecs.T @ train_y) ** 2 + (evecs.T @ nngp_train @ evecs).diagonal()
    on_train = pred(None, t=t_axis, get="ntk")
    expected = 0.5 * (((on_train.mean - train_y) ** 2).sum(-1) + on_train.variance.sum(-1)) / n
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i in reversed(range(n)):
        decay = modes[i] * torch.exp(-2 * evals[i] * t_axis / n) / (2 * n)
        ax.plot(t_axis, decay, lw=1, ls="--", label=f"mode λ={evals[i]:.2g}")
    for b in range(count):
        ax.plot(
            t_axis, losses[b, 1:], color="k", lw=0.6, alpha=0.5, label="finite networks" if b == 0 else None
        )
    ax.plot(t_axis, expected.detach(), color="C3", lw=2, label="ensemble expected loss")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-8, 3 * float(max(losses.max(), expected.max())))
    ax.set_xlabel("t = learning rate × steps")
    ax.set_ylabel("training loss  (1/2n) Σ (f - y)²")
    ax.set_title("Large-eigenvalue modes are learnt first")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths["loss"] = OUTPUT / "training_dynamics_loss.png"
    fig.savefig(paths["loss"], dpi=110)
    plt.close(fig)
    for path in paths.values():
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few narrow networks, short training")
    main(parser.parse_args().quick)
