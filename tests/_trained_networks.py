"""Many finite networks from gp_ntk.networks, stacked into batched tensors and trained together.

A Python loop over hundreds of ``nn.Module``\\ s is dominated by per-call overhead; stacking the
parameters of ``B`` independent networks into ``(B, out, in)`` tensors trains all of them with a
handful of batched matmuls per step. The sum of the per-network losses has the per-network
gradients as its gradient (the networks share no parameter), so one backward pass serves all.
"""

from __future__ import annotations

import torch
from torch import Tensor

import gp_ntk


class StackedNetworks:
    """``B`` NTK-parameterised networks of one architecture, as batched parameter tensors."""

    def __init__(
        self, kernel, in_features: int, width: int, count: int, seed: int, dtype: torch.dtype | None = None
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        nets = [gp_ntk.networks.from_kernel(kernel, in_features, width, generator=gen) for _ in range(count)]
        first = nets[0]
        if first.parameterization != "ntk":
            raise ValueError("StackedNetworks implements the NTK parameterisation only")
        self.activation = first.activation
        self.depth = first.depth
        self.weights = [
            torch.stack([net.layers[i].weight.detach() for net in nets]) for i in range(len(first.layers))
        ]
        has_bias = first.layers[0].bias is not None
        self.biases = [
            torch.stack([net.layers[i].bias.detach() for net in nets]) if has_bias else None
            for i in range(len(first.layers))
        ]
        self.weight_scales = [getattr(first, f"_weight_scale_{i}") for i in range(len(first.layers))]
        self.bias_scales = [getattr(first, f"_bias_scale_{i}") for i in range(len(first.layers))]
        self.modules = nets  # kept for checking the stacked forward against the modules
        if dtype is not None:  # float32 halves the cost of training; the kernels stay float64
            cast = lambda values: [None if v is None else v.to(dtype) for v in values]  # noqa: E731
            self.weights, self.biases = cast(self.weights), cast(self.biases)
            self.weight_scales, self.bias_scales = cast(self.weight_scales), cast(self.bias_scales)

    def parameters(self, readout_only: bool = False) -> list[Tensor]:
        layers = range(len(self.weights))
        if readout_only:
            layers = [len(self.weights) - 1]
        out = [self.weights[i] for i in layers] + [
            self.biases[i] for i in layers if self.biases[i] is not None
        ]
        return out

    def __call__(self, x: Tensor) -> Tensor:
        """Outputs ``(B, P)`` on inputs ``(P, d)``."""
        h = x.expand(self.weights[0].shape[0], *x.shape)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            z = (h * self.weight_scales[i]) @ weight.mT
            if bias is not None:
                z = z + self.bias_scales[i] * bias[:, None, :]
            h = self.activation(z) if i < self.depth else z
        return h.squeeze(-1)


def train(
    nets: StackedNetworks,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    learning_rate: float | list[float],
    record_steps: list[int],
    readout_only: bool = False,
) -> tuple[Tensor, Tensor]:
    """Full-batch gradient descent on :math:`\\frac{1}{2n}\\sum (f - y)^2`, every network at once.

    ``learning_rate`` is one rate or one per step (the continuous-time limit depends only on
    their running sum, so a larger rate once the fast modes are fitted reaches late times in few
    steps). Returns the test and training outputs at each step of ``record_steps``:
    ``(len(record_steps), B, m)`` and ``(len(record_steps), B, n)``.
    """
    params = nets.parameters(readout_only)
    for p in params:
        p.requires_grad_(True)
    dtype = nets.weights[0].dtype
    inputs, y_train = torch.cat([x_train, x_test]).to(dtype), y_train.to(dtype)
    n = len(x_train)
    test_out, train_out = [], []
    last = max(record_steps)
    for step in range(last + 1):
        with torch.enable_grad():
            f = nets(inputs)
            if step in record_steps:
                test_out.append(f[:, n:].detach().clone())
                train_out.append(f[:, :n].detach().clone())
            if step == last:
                break
            loss = 0.5 * ((f[:, :n] - y_train) ** 2).sum() / y_train.numel()
            grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            rate = learning_rate[step] if isinstance(learning_rate, list) else learning_rate
            for p, g in zip(params, grads):
                p.sub_(rate * g)
    for p in params:
        p.requires_grad_(False)
    return torch.stack(test_out).to(x_train.dtype), torch.stack(train_out).to(x_train.dtype)
