r"""Spectra of network kernels: eigenmodes, the label prior by modes, eigenlearning, NeuralEF.

For inputs :math:`X = (x_1, \dots, x_n)` drawn from a distribution :math:`p`, the kernel matrix
:math:`K = k(X, X)` with eigenpairs :math:`K u_j = \Lambda_j u_j` (:math:`\lVert u_j\rVert = 1`)
estimates the integral operator :math:`(Tf)(x) = \mathbb E_{x'\sim p}[k(x, x') f(x')]`: its
eigenvalues are :math:`\lambda_j \approx \Lambda_j / n` and its eigenfunctions, by the Nyström
extension,

.. math::
    \psi_j(x) = \frac{\sqrt n}{\Lambda_j}\, k(x, X)\, u_j = \frac{1}{\sqrt n\,\lambda_j}\, k(x, X)\, u_j,

so that :math:`\psi_j(X) = \sqrt n\, u_j` and :math:`\frac1n \sum_i \psi_j(x_i)^2 = 1`.

**Sign rule.** An eigenvector is defined up to sign; :func:`eigenmodes` makes the entry of
largest absolute value of every :math:`u_j` positive (the first such entry on a tie), so the
same kernel and inputs give the same eigenfunctions on every machine up to ties.

Functions here:

* :func:`eigenmodes`: top-:math:`k` operator eigenvalues and Nyström eigenfunctions; dense
  ``eigh`` for small :math:`n`, above that LOBPCG (or Lanczos) on gp_ntk's lazy blocked operator,
  whose products need :math:`O(n)` memory;
* :func:`log_prior_terms`: :math:`\log\mathcal N(y \mid 0, K + \sigma^2 I)` split into one term
  per eigenmode; :func:`conditional_log_prior`: the prior density of candidate test labels
  given the training labels;
* :func:`eigenlearning`: learnabilities and the predicted test error of kernel (ridge)
  regression from the spectrum alone [Simon2023]_;
* :class:`NeuralEigenfunctions`: NeuralEF [Deng2022]_, eigenfunctions as small neural networks
  trained on minibatches, never building the :math:`n \times n` matrix.

.. [Simon2023] J. B. Simon, M. Dickens, D. Karkada, M. R. DeWeese. The Eigenlearning Framework:
    A Conservation Law Perspective on Kernel Regression and Wide Neural Networks. TMLR 2023
    (arXiv:2110.03922, 2021).
.. [Deng2022] Z. Deng, J. Shi, J. Zhu. NeuralEF: Deconstructing Kernels by Deep Neural
    Networks. ICML 2022.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gpytorch.kernels import Kernel
from torch import Tensor, nn

from . import settings

__all__ = [
    "Eigenlearning",
    "Eigenmodes",
    "LogPriorTerms",
    "NeuralEigenfunctions",
    "conditional_log_prior",
    "eigenlearning",
    "eigenmodes",
    "log_prior_terms",
]

#: above this many points :func:`eigenmodes` (method ``"auto"``) switches from dense ``eigh``
DENSE_THRESHOLD = 3000

_METHODS = ("auto", "dense", "lobpcg", "lanczos")


def _check_kernel(kernel) -> None:
    if not isinstance(kernel, Kernel):
        raise ValueError(f"kernel must be a gpytorch Kernel, got {type(kernel).__name__}")
    if len(kernel.batch_shape) > 0:
        raise ValueError(f"kernel must have no batch_shape, got {tuple(kernel.batch_shape)}")


def _check_inputs(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (n, d) tensor with n >= 1, got {shape}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has NaN or infinite entries")
    return x


def _dense_kernel(kernel: Kernel, x1: Tensor, x2: Tensor | None = None) -> Tensor:
    with torch.no_grad():
        return kernel(x1, x1 if x2 is None else x2).to_dense()


def _lazy_matmul(kernel: Kernel, x1: Tensor, x2: Tensor, rhs: Tensor) -> Tensor:
    """``k(x1, x2) @ rhs`` through the blocked operator: memory O((n + m) d + block)."""
    with torch.no_grad(), settings.lazy_evaluation("always"):
        return kernel(x1, x2) @ rhs


def _signs(vectors: Tensor) -> Tensor:
    """``(k,)`` signs that make the entry of largest magnitude of each column positive."""
    index = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors.gather(0, index.unsqueeze(0))).squeeze(0)
    return torch.where(signs == 0, torch.ones_like(signs), signs)


def _fix_signs(vectors: Tensor) -> Tensor:
    """The documented sign rule: the entry of largest magnitude of each column is positive."""
    return vectors * _signs(vectors)


@dataclass
class Eigenmodes:
    r"""Top eigenpairs of a kernel on inputs :math:`X`, callable as Nyström eigenfunctions.

    Attributes:
        eigenvalues: ``(k,)`` operator eigenvalues :math:`\lambda_j = \Lambda_j / n`, descending.
        vectors: ``(n, k)`` orthonormal eigenvectors :math:`u_j` of :math:`k(X, X)`.
        kernel: the kernel.
        x: ``(n, d)`` the inputs :math:`X`.

    ``modes(x_new)`` is ``(m, k)``: :math:`\psi_j(x) = k(x, X)u_j / (\sqrt n\,\lambda_j)`,
    whose mean square over :math:`X` is 1; ``modes(x)`` equals ``sqrt(n) * modes.vectors``.
    """

    eigenvalues: Tensor
    vectors: Tensor
    kernel: Kernel
    x: Tensor

    @property
    def matrix_eigenvalues(self) -> Tensor:
        """``(k,)`` eigenvalues :math:`\\Lambda_j = n\\lambda_j` of the matrix :math:`k(X, X)`."""
        return self.eigenvalues * self.x.shape[0]

    def __call__(self, x_new: Tensor) -> Tensor:
        x_new = _check_inputs(x_new, "x_new")
        if x_new.shape[-1] != self.x.shape[-1]:
            raise ValueError(f"x_new must have {self.x.shape[-1]} features, got {x_new.shape[-1]}")
        n = self.x.shape[0]
        x_new = x_new.to(self.x)
        if settings.lazy_evaluation.applies(x_new.shape[0], n):
            projected = _lazy_matmul(self.kernel, x_new, self.x, self.vectors)
        else:
            projected = _dense_kernel(self.kernel, x_new, self.x) @ self.vectors
        return projected / (math.sqrt(n) * self.eigenvalues)


def _top_lobpcg(kernel: Kernel, x: Tensor, k: int, tol: float, max_iter: int, seed: int):
    from scipy.sparse.linalg import LinearOperator, lobpcg

    n = x.shape[0]
    dtype = x.dtype

    def matmat(v: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(v).reshape(n, -1), dtype=dtype, device=x.device)
        return _lazy_matmul(kernel, x, x, v).cpu().double().numpy()

    operator = LinearOperator((n, n), matvec=matmat, matmat=matmat, dtype=np.float64)
    # a few extra columns speed up convergence of the wanted ones (the block converges at the
    # rate of the gap to the first unwanted eigenvalue)
    block = min(n - 1, k + max(2, k // 2))
    start = np.random.default_rng(seed).standard_normal((n, block))
    values, vectors = lobpcg(operator, start, largest=True, tol=tol, maxiter=max_iter)
    order = np.argsort(values)[::-1][:k]
    return torch.as_tensor(values[order].copy()), torch.as_tensor(vectors[:, order].copy())


def _top_lanczos(kernel: Kernel, x: Tensor, k: int, tol: float, max_iter: int, seed: int):
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = x.shape[0]

    def matvec(v: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(v).reshape(n, -1), dtype=x.dtype, device=x.device)
        return _lazy_matmul(kernel, x, x, v).cpu().double().numpy()

    operator = LinearOperator((n, n), matvec=matvec, matmat=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    values, vectors = eigsh(operator, k=k, which="LA", tol=tol, maxiter=max_iter, v0=v0)
    order = np.argsort(values)[::-1]
    return torch.as_tensor(values[order].copy()), torch.as_tensor(vectors[:, order].copy())


def eigenmodes(
    kernel: Kernel,
    x: Tensor,
    k: int,
    method: str = "auto",
    tol: float | None = None,
    max_iter: int = 500,
    seed: int = 0,
) -> Eigenmodes:
    r"""The top-``k`` eigenvalues and Nyström eigenfunctions of ``kernel`` on inputs ``x``.

    Args:
        kernel: a GPyTorch kernel without batch shape.
        x: ``(n, d)`` inputs, samples of the distribution the operator integrates against.
        k: number of modes, ``1 <= k <= n`` (``k < n`` for the iterative methods).
        method: ``"dense"`` (``torch.linalg.eigh`` of the full matrix), ``"lobpcg"`` (block
            LOBPCG on the lazy operator: :math:`O(n^2 k)` time per iteration, :math:`O(nk)`
            memory), ``"lanczos"`` (ARPACK's implicitly restarted Lanczos, one product per
            step) or ``"auto"``: dense up to ``DENSE_THRESHOLD`` points, else LOBPCG.
        tol: convergence tolerance of the iterative methods (default: scipy's).
        max_iter: iteration limit of the iterative methods.
        seed: seed of their random start.

    Returns:
        :class:`Eigenmodes`, eigenvalues descending, signs by the module's rule.
    """
    _check_kernel(kernel)
    x = _check_inputs(x)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}], got {k!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method == "auto":
        method = "dense" if n <= DENSE_THRESHOLD or k > n // 5 else "lobpcg"
    if method != "dense" and (k >= n or n < 3 * k + 3):
        raise ValueError(f"method {method!r} needs n >= 3 k + 3, got n={n}, k={k}; use method='dense'")
    if method == "dense":
        values, vectors = torch.linalg.eigh(_dense_kernel(kernel, x))
        values, vectors = values.flip(-1)[:k], vectors.flip(-1)[:, :k]
    else:
        solver = _top_lobpcg if method == "lobpcg" else _top_lanczos
        values, vectors = solver(kernel, x, k, tol, max_iter, seed)
        values, vectors = values.to(x), vectors.to(x)
    if not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
        raise ValueError(
            f"the top {k} eigenvalues must be positive for Nyström eigenfunctions, got {values.tolist()}; "
            "ask for fewer modes"
        )
    return Eigenmodes(eigenvalues=values / n, vectors=_fix_signs(vectors), kernel=kernel, x=x)


# ---------------------------------------------------------------------- the label prior by modes


@dataclass
class LogPriorTerms:
    r"""The Gaussian log density of labels, one term per eigenmode of the covariance.

    For :math:`C = K + \sigma^2 I = \sum_i \mu_i v_i v_i^\top`,

    .. math::
        \log\mathcal N(y\mid 0, C) = -\tfrac12 y^\top C^{-1} y - \tfrac12\log\det(2\pi C)
        = \sum_i \Big[-\frac{(v_i^\top y)^2}{2\mu_i} - \tfrac12\log(2\pi\mu_i)\Big],

    because :math:`C^{-1} = \sum_i \mu_i^{-1} v_i v_i^\top` and
    :math:`\det(2\pi C) = \prod_i 2\pi\mu_i`.

    Attributes:
        eigenvalues: ``(n,)`` :math:`\mu_i`, descending.
        vectors: ``(n, n)`` the :math:`v_i`, signs by the module's rule.
        projections: ``(n,)`` :math:`v_i^\top y`.
        quadratic: ``(n,)`` :math:`-(v_i^\top y)^2 / (2\mu_i)` (data fit of mode :math:`i`).
        log_normaliser: ``(n,)`` :math:`-\tfrac12\log(2\pi\mu_i)` (complexity of mode :math:`i`).
    """

    eigenvalues: Tensor
    vectors: Tensor
    projections: Tensor
    quadratic: Tensor
    log_normaliser: Tensor

    @property
    def terms(self) -> Tensor:
        """``(n,)`` the per-mode contributions, summing to :attr:`total`."""
        return self.quadratic + self.log_normaliser

    @property
    def total(self) -> Tensor:
        """:math:`\\log\\mathcal N(y \\mid 0, K + \\sigma^2 I)`."""
        return self.terms.sum()


def _check_noise(noise: float) -> float:
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite variance >= 0, got {noise}")
    return noise


def _check_labels(y: Tensor, n: int, name: str = "y") -> Tensor:
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != n:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name} must be a ({n},) tensor, got {shape}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name} has NaN or infinite entries")
    return y


def log_prior_terms(kernel: Kernel, x: Tensor, y: Tensor, noise: float = 0.0) -> LogPriorTerms:
    r"""Split :math:`\log\mathcal N(y \mid 0, k(X, X) + \sigma^2 I)` into eigenmode terms.

    Args:
        kernel: the prior covariance (a GPyTorch kernel, no batch shape).
        x: ``(n, d)`` inputs.
        y: ``(n,)`` labels (centre them first: the prior mean is zero).
        noise: :math:`\sigma^2 \ge 0`.

    Returns:
        :class:`LogPriorTerms`; raises ValueError when :math:`K + \sigma^2 I` is not positive
        definite in floating point (add ``noise``).
    """
    _check_kernel(kernel)
    x = _check_inputs(x)
    y = _check_labels(y, x.shape[0]).to(x)
    noise = _check_noise(noise)
    covariance = _dense_kernel(kernel, x)
    covariance = covariance + noise * torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    values, vectors = torch.linalg.eigh(covariance)
    values, vectors = values.flip(-1), _fix_signs(vectors.flip(-1))
    if not bool((values > 0).all()):
        raise ValueError(
            f"k(x, x) + noise I is not positive definite (smallest eigenvalue {values[-1].item():.3g}); "
            "pass a positive noise"
        )
    projections = vectors.T @ y
    return LogPriorTerms(
        eigenvalues=values,
        vectors=vectors,
        projections=projections,
        quadratic=-0.5 * projections.square() / values,
        log_normaliser=-0.5 * torch.log(2 * math.pi * values),
    )


def conditional_log_prior(
    kernel: Kernel, x: Tensor, y: Tensor, x_test: Tensor, candidates: Tensor, noise: float = 0.0
) -> Tensor:
    r"""Prior log density of candidate test labels given the training labels.

    Under the prior :math:`f \sim \mathcal{GP}(0, k)` with labels :math:`y = f(X) + \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)`, a candidate :math:`y_*` for the labels
    at ``x_test`` has density

    .. math::
        \log p(y_* \mid y) = \log\mathcal N\big(y_* \mid K_{*X}C^{-1}y,\;
            K_{**} + \sigma^2 I - K_{*X}C^{-1}K_{X*}\big), \qquad C = K_{XX} + \sigma^2 I,

    equal to :math:`\log p(y, y_*) - \log p(y)` (each of which :func:`log_prior_terms` splits
    by modes). Comparing candidates answers "which extrapolation does the network prefer?".

    Args:
        kernel, x, y, noise: as for :func:`log_prior_terms`.
        x_test: ``(m, d)`` test inputs.
        candidates: ``(m,)`` one candidate or ``(c, m)`` several.

    Returns:
        ``()`` or ``(c,)`` log densities.
    """
    _check_kernel(kernel)
    x = _check_inputs(x)
    x_test = _check_inputs(x_test, "x_test").to(x)
    if x_test.shape[-1] != x.shape[-1]:
        raise ValueError(f"x_test must have {x.shape[-1]} features, got {x_test.shape[-1]}")
    y = _check_labels(y, x.shape[0]).to(x)
    noise = _check_noise(noise)
    m = x_test.shape[0]
    if not isinstance(candidates, Tensor) or candidates.dim() not in (1, 2) or candidates.shape[-1] != m:
        shape = tuple(candidates.shape) if isinstance(candidates, Tensor) else type(candidates).__name__
        raise ValueError(f"candidates must be ({m},) or (c, {m}), got {shape}")
    if not bool(torch.isfinite(candidates).all()):
        raise ValueError("candidates has NaN or infinite entries")
    joint = _dense_kernel(kernel, torch.cat([x, x_test]))
    joint = joint + noise * torch.eye(joint.shape[0], dtype=x.dtype, device=x.device)
    n = x.shape[0]
    train, cross, test = joint[:n, :n], joint[:n, n:], joint[n:, n:]
    try:
        chol = torch.linalg.cholesky(train)
    except torch.linalg.LinAlgError as error:
        raise ValueError("k(x, x) + noise I is not positive definite; pass a positive noise") from error
    solved = torch.cholesky_solve(torch.cat([y.unsqueeze(-1), cross], dim=-1), chol)
    mean = cross.T @ solved[:, 0]
    covariance = test - cross.T @ solved[:, 1:]
    covariance = 0.5 * (covariance + covariance.T)
    distribution = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance)
    return distribution.log_prob(candidates.to(x))


# ---------------------------------------------------------------------- eigenlearning


@dataclass
class Eigenlearning:
    r"""Predictions of the eigenlearning framework for kernel ridge regression on ``n`` samples.

    Attributes:
        kappa: the effective regularisation :math:`\kappa`.
        learnabilities: ``(k,)`` :math:`\mathcal L_i = \lambda_i / (\lambda_i + \kappa)`.
        overfitting_coefficient: :math:`\mathcal E_0 = n / (n - \sum_i \mathcal L_i^2)`.
        test_mse: predicted :math:`\mathbb E[(\hat f(x) - y(x))^2]` on fresh samples with label
            noise, :math:`\mathcal E_0\,(\sum_i (1 - \mathcal L_i)^2 v_i^2 + \varepsilon^2)`.
        train_mse: predicted mean squared training residual,
            :math:`(\delta/(n\kappa))^2\,` ``test_mse``.
    """

    kappa: Tensor
    learnabilities: Tensor
    overfitting_coefficient: Tensor
    test_mse: Tensor
    train_mse: Tensor


def _solve_kappa(eigenvalues: Tensor, n: int, ridge: float) -> float:
    values = eigenvalues.double()

    def excess(kappa: float) -> float:
        # decreasing in kappa, from +inf (or rank - n) to -n
        return float((values / (values + kappa)).sum()) + ridge / kappa - n

    low, high = 1e-300, max(float(values.sum()) + ridge, 1e-300)
    while excess(high) > 0:
        high *= 2.0
    if excess(low) <= 0:
        raise ValueError(
            f"with ridge 0 eigenlearning needs more than num_samples={n} positive eigenvalues; "
            "pass more eigenvalues or a positive ridge"
        )
    # bisection on log(kappa): robust across the many decades kappa can take
    log_low, log_high = math.log(low), math.log(high)
    for _ in range(200):
        middle = 0.5 * (log_low + log_high)
        if excess(math.exp(middle)) > 0:
            log_low = middle
        else:
            log_high = middle
    return math.exp(0.5 * (log_low + log_high))


def eigenlearning(
    eigenvalues: Tensor, coefficients: Tensor, num_samples: int, ridge: float = 0.0, noise: float = 0.0
) -> Eigenlearning:
    r"""Predicted generalisation of kernel ridge regression from the kernel's spectrum [Simon2023]_.

    Kernel ridge regression :math:`\hat f(x) = k(x, X)(K + \delta I)^{-1}y` on ``n`` iid samples
    of a target :math:`f = \sum_i v_i \phi_i` (operator eigenpairs :math:`\lambda_i, \phi_i`
    under the data distribution, :math:`\mathbb E[\phi_i\phi_j] = \delta_{ij}`), with labels
    :math:`y = f(X) + \varepsilon`, :math:`\mathrm{Var}\,\varepsilon = \varepsilon^2`, learns
    mode :math:`i` by the fraction :math:`\mathcal L_i = \lambda_i/(\lambda_i + \kappa)`, with
    :math:`\kappa` the solution of

    .. math::
        \sum_i \frac{\lambda_i}{\lambda_i + \kappa} + \frac{\delta}{\kappa} = n,

    and its test mean squared error is, to leading order in :math:`1/n`,
    :math:`\mathcal E_0\big(\sum_i (1 - \mathcal L_i)^2 v_i^2 + \varepsilon^2\big)` with
    :math:`\mathcal E_0 = n/(n - \sum_i \mathcal L_i^2)`. The sum of learnabilities is the
    conserved quantity :math:`\sum_i \mathcal L_i = n - \delta/\kappa`.

    With :func:`eigenmodes` on a pool of :math:`N` points treated as the data distribution,
    ``eigenvalues = modes.eigenvalues`` and ``coefficients = modes.vectors.T @ y / sqrt(N)``.

    Args:
        eigenvalues: ``(k,)`` operator eigenvalues :math:`\lambda_i \ge 0`.
        coefficients: ``(k,)`` target coefficients :math:`v_i` in the eigenbasis.
        num_samples: :math:`n`, the number of training samples.
        ridge: :math:`\delta \ge 0`; with 0, more than :math:`n` positive eigenvalues are needed.
        noise: label noise variance :math:`\varepsilon^2 \ge 0`.
    """
    if not isinstance(eigenvalues, Tensor) or eigenvalues.dim() != 1 or eigenvalues.numel() < 1:
        raise ValueError("eigenvalues must be a non-empty (k,) tensor")
    if not bool(torch.isfinite(eigenvalues).all()) or bool((eigenvalues < 0).any()):
        raise ValueError("eigenvalues must be finite and non-negative")
    if not isinstance(coefficients, Tensor) or coefficients.shape != eigenvalues.shape:
        raise ValueError(f"coefficients must have the eigenvalues' shape {tuple(eigenvalues.shape)}")
    if not bool(torch.isfinite(coefficients).all()):
        raise ValueError("coefficients has NaN or infinite entries")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    ridge = float(ridge)
    if not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be finite and >= 0, got {ridge}")
    noise = _check_noise(noise)
    kappa = _solve_kappa(eigenvalues, num_samples, ridge)
    values = eigenvalues.double()
    learnabilities = values / (values + kappa)
    overfitting = num_samples / (num_samples - learnabilities.square().sum())
    bias = ((1 - learnabilities).square() * coefficients.double().square()).sum()
    test_mse = overfitting * (bias + noise)
    train_mse = (ridge / (num_samples * kappa)) ** 2 * test_mse
    return Eigenlearning(
        kappa=torch.tensor(kappa, dtype=torch.float64),
        learnabilities=learnabilities.to(eigenvalues.dtype),
        overfitting_coefficient=overfitting,
        test_mse=test_mse,
        train_mse=train_mse,
    )


# ---------------------------------------------------------------------- NeuralEF


class _ParallelMLPs(nn.Module):
    """``k`` independent MLPs ``d -> hidden -> ... -> 1`` evaluated as one batched product."""

    def __init__(self, in_features: int, count: int, hidden: int, layers: int, generator, dtype) -> None:
        super().__init__()
        sizes = [in_features] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes, sizes[1:]):
            weight = torch.randn(count, n_in, n_out, generator=generator, dtype=dtype) / math.sqrt(n_in)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(count, 1, n_out, dtype=dtype)))

    def forward(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(0)  # (1, b, d), broadcast over the k networks
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.matmul(h, weight) + bias
            if index < last:
                h = torch.nn.functional.silu(h)
        return h.squeeze(-1).T  # (b, k)


class NeuralEigenfunctions(nn.Module):
    r"""NeuralEF [Deng2022]_: the top eigenfunctions of a kernel as ``k`` small neural networks.

    Each network :math:`\hat\psi_j` is trained on minibatches :math:`B` of the inputs. On a
    batch, outputs are L2-batch-normalised, :math:`\psi_j = \hat\psi_j / \sqrt{\tfrac{1}{|B|}
    \sum_{x \in B}\hat\psi_j(x)^2}` (so :math:`\mathbb E[\psi_j^2] = 1`, the normalisation of
    :class:`Eigenmodes`), and with :math:`R = \psi(B)^\top k(B, B)\,\psi(B) / |B|^2`, an
    estimate of :math:`\langle\psi_i, T\psi_j\rangle`, network :math:`j` ascends

    .. math::
        R_{jj} - \sum_{i<j} \frac{R_{ij}^2}{R_{ii}},

    where the networks :math:`i < j` are held fixed (stop-gradient): the maximiser is the
    :math:`j`-th eigenfunction once the earlier ones are. The normalising batch norms are
    tracked by moving averages for prediction. Only :math:`|B| \times |B|` kernel blocks are
    evaluated in training, so the cost per step does not depend on :math:`n`.

    **Eigenvalues: the Rayleigh–Ritz step.** The moving averages of :math:`R_{jj}` (kept as
    ``training_eigenvalues``) are biased upwards: a function :math:`\psi_j = \sqrt{1-\epsilon^2}
    \phi_j + \epsilon\phi_1` with a small leak into the first eigenfunction has :math:`R_{jj}
    \approx \lambda_j + \epsilon^2\lambda_1`, while the objective, :math:`(1-\epsilon^2)
    \lambda_j`, pulls the leak back only with force :math:`\lambda_j`. Where :math:`\lambda_1
    \gg \lambda_j` (network kernels on many inputs have a dominant near-constant mode) the
    estimates exceed the eigenvalues many times over and their sum exceeds the trace. After
    training, :meth:`rayleigh_ritz` on ``ritz_points`` of the inputs (default 4096) replaces the
    functions by the orthonormal Ritz functions of their span and the eigenvalues by the Ritz
    values, which never exceed the eigenvalues of :math:`k(Z, Z)/m` and sum to at most the mean
    of :math:`k(x, x)`. On the 8-D ReLU NNGP of ``benchmarks/neuralef_convergence.py`` (first
    mode 63 % of the trace), k = 64, 2000 steps: median eigenvalue error 2.05 before and 0.056
    after, eigenvalue sum 1.40 and 0.96 of the trace, relative error of the rank-64 kernel on
    held-out points 0.163 and 0.025 (optimum 0.003). Its cost is :math:`m^2` kernel entries,
    in blocks, and :math:`O(mk)` memory.

    Args:
        kernel: a GPyTorch kernel without batch shape.
        num_eigenfunctions: ``k``.
        hidden_features: width of each network's hidden layers.
        hidden_layers: number of hidden layers of each network.
        momentum: of the moving averages (weight of the old value).

    ``fit(x, steps=2000, batch_size=256, lr=1e-3, seed=0, progress=False, ritz_points=4096)``:
    the defaults were measured on the kernel above: in the Rayleigh–Ritz kernel error, 2000
    steps improve on 500 by 3× (k = 64); the remaining gap to the optimum is the span the
    networks find, not the eigenvalues (``ritz_points=0`` keeps the moving averages).
    Networks are in the inputs' dtype.

    Example:
        >>> from gp_ntk.spectral import NeuralEigenfunctions
        >>> kernel, x = gp_ntk.NNGPKernel(depth=2, activation="erf"), torch.randn(256, 2)
        >>> nef = NeuralEigenfunctions(kernel, num_eigenfunctions=4).fit(x, steps=20)
        >>> nef(torch.randn(7, 2)).shape, nef.eigenvalues.shape
        (torch.Size([7, 4]), torch.Size([4]))

    The sign of each eigenfunction is fixed after fitting so that its value of largest
    magnitude on the fitted inputs is positive (the rule of :func:`eigenmodes`).
    """

    def __init__(
        self,
        kernel: Kernel,
        num_eigenfunctions: int,
        hidden_features: int = 64,
        hidden_layers: int = 2,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        _check_kernel(kernel)
        for name, value in (
            ("num_eigenfunctions", num_eigenfunctions),
            ("hidden_features", hidden_features),
            ("hidden_layers", hidden_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.kernel = kernel
        self.num_eigenfunctions = num_eigenfunctions
        self.hidden_features, self.hidden_layers = hidden_features, hidden_layers
        self.momentum = float(momentum)
        self.networks: _ParallelMLPs | None = None
        self.losses: list[float] = []

    def fit(
        self,
        x: Tensor,
        steps: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        seed: int = 0,
        progress: bool = False,
        ritz_points: int = 4096,
    ) -> NeuralEigenfunctions:
        """Train on ``x`` ``(n, d)`` for ``steps`` minibatches of ``batch_size``, then (with
        ``ritz_points`` > 0) the Rayleigh–Ritz step on that many of the points; returns ``self``."""
        x = _check_inputs(x)
        k = self.num_eigenfunctions
        for name, value in (("steps", steps), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if batch_size <= k:
            raise ValueError(f"batch_size must exceed num_eigenfunctions={k}, got {batch_size}")
        if not math.isfinite(float(lr)) or lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if isinstance(ritz_points, bool) or not isinstance(ritz_points, int) or ritz_points < 0:
            raise ValueError(f"ritz_points must be a non-negative integer, got {ritz_points!r}")
        if 0 < min(ritz_points, x.shape[0]) <= k:
            raise ValueError(
                f"the Rayleigh–Ritz step needs more than num_eigenfunctions={k} points: ritz_points "
                f"and the rows of x must exceed it (or pass ritz_points=0), got {ritz_points} and {x.shape[0]}"
            )
        generator = torch.Generator().manual_seed(seed)
        dtype = x.dtype
        # the networks see standardised inputs; the kernel sees the raw ones
        self.register_buffer("input_mean", x.mean(0))
        self.register_buffer(
            "input_scale", x.std(0).clamp_min(1e-12) if x.shape[0] > 1 else torch.ones_like(x[0])
        )
        self.networks = _ParallelMLPs(
            x.shape[-1], k, self.hidden_features, self.hidden_layers, generator, dtype
        ).to(x.device)
        self.register_buffer("eigenvalues", torch.zeros(k, dtype=dtype, device=x.device))
        self.register_buffer("training_eigenvalues", torch.zeros(k, dtype=dtype, device=x.device))
        self.register_buffer("output_norms", torch.ones(k, dtype=dtype, device=x.device))
        self.register_buffer("rotation", torch.eye(k, dtype=dtype, device=x.device))
        self.register_buffer("signs", torch.ones(k, dtype=dtype, device=x.device))
        optimizer = torch.optim.Adam(self.networks.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        n = x.shape[0]
        batch_size = min(batch_size, n)
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=x.device), diagonal=1)
        self.losses = []
        for step in range(steps):
            index = torch.randperm(n, generator=generator)[:batch_size].to(x.device)
            batch = x[index]
            gram = _dense_kernel(self.kernel, batch).to(dtype)
            raw = self.networks((batch - self.input_mean) / self.input_scale)
            norms = raw.square().mean(0).sqrt().clamp_min(1e-12)
            psi = raw / norms
            fixed = psi.detach()
            r_live = fixed.T @ gram @ psi / batch_size**2  # row i fixed, column j trained
            r_fixed = r_live.detach()
            diagonal = torch.einsum("bj,bc,cj->j", psi, gram, psi) / batch_size**2
            penalty = (r_live.square() / r_fixed.diagonal().clamp_min(1e-30).unsqueeze(-1))[upper].sum()
            loss = -diagonal.sum() + penalty
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                weight = 0.0 if step == 0 else self.momentum
                self.training_eigenvalues.mul_(weight).add_((1 - weight) * diagonal.detach())
                self.output_norms.mul_(weight).add_((1 - weight) * norms.detach())
            self.losses.append(float(loss.detach()))
            if progress and (step + 1) % max(1, steps // 10) == 0:
                print(f"NeuralEF step {step + 1}/{steps}: loss {self.losses[-1]:.4g}", flush=True)
        sample = x[torch.randperm(n, generator=generator)[: min(n, max(ritz_points, 4096))].to(x.device)]
        if ritz_points > 0:
            return self.rayleigh_ritz(sample[:ritz_points])
        self.eigenvalues.copy_(self.training_eigenvalues)
        with torch.no_grad():
            self.signs.copy_(_signs(self(sample)))
        return self

    def rayleigh_ritz(self, points: Tensor) -> NeuralEigenfunctions:
        r"""Replace the functions by the Ritz functions of the networks' span on ``points``
        ``(m, d)`` (``fit`` does this on ``ritz_points`` of its inputs); returns ``self``.

        With :math:`\Psi = \psi(Z)` on :math:`m` points, :math:`G = \Psi^\top\Psi/m` and
        :math:`A = \Psi^\top k(Z, Z)\Psi/m^2`, solve :math:`A v = \mu G v`; the functions
        :math:`\psi v_j` are orthonormal on the points and the :math:`\mu_j` are the eigenvalues
        of :math:`k(Z, Z)/m` restricted to the span, so (Courant–Fischer) :math:`\mu_j \le
        \Lambda_j/m` and :math:`\sum_j\mu_j \le \operatorname{tr} k(Z, Z)/m`. Directions in
        which the span is degenerate (networks that learned the same function) get
        :math:`\mu = 0` and a zero function. Costs :math:`m^2` kernel entries, evaluated in
        blocks (memory :math:`O(mk)` besides one block). Signs follow the rule of
        :func:`eigenmodes` on ``points``."""
        if self.networks is None:
            raise ValueError("NeuralEigenfunctions must be fitted (call .fit(x)) before rayleigh_ritz")
        points = _check_inputs(points, "points")
        m, k = points.shape[0], self.num_eigenfunctions
        if m <= k:
            raise ValueError(f"points must have more than num_eigenfunctions={k} rows, got {m}")
        self.rotation.copy_(torch.eye(k, dtype=self.rotation.dtype, device=self.rotation.device))
        self.signs.fill_(1.0)
        with torch.no_grad():
            psi = self(points).double()
        cross = _lazy_matmul(self.kernel, points, points, psi.to(points.dtype)).double()
        gram = psi.T @ psi / m
        projected = psi.T @ cross / m**2
        projected = (projected + projected.T) / 2
        scales, directions = torch.linalg.eigh(gram)
        keep = scales > scales.max() * 1e-10
        whiten = directions[:, keep] / scales[keep].sqrt()
        values, vectors = torch.linalg.eigh(whiten.T @ projected @ whiten)
        order = torch.argsort(values, descending=True)
        rotation = torch.zeros(k, k, dtype=torch.float64, device=psi.device)
        eigenvalues = torch.zeros(k, dtype=torch.float64, device=psi.device)
        rotation[:, : int(keep.sum())] = whiten @ vectors[:, order]
        eigenvalues[: int(keep.sum())] = values[order].clamp_min(0)
        self.rotation.copy_(rotation.to(self.rotation))
        self.eigenvalues.copy_(eigenvalues.to(self.eigenvalues))
        with torch.no_grad():
            self.signs.copy_(_signs(self(points)))
        return self

    def as_kernel(self, chunk_size: int = 4096) -> Kernel:
        r"""The rank-``k`` kernel :math:`\sum_j \lambda_j\psi_j(x)\psi_j(y)` of the fitted
        eigenfunctions, a :class:`gp_ntk.approximations.NeuralEFKernel` with a low-rank root."""
        from .approximations import NeuralEFKernel

        return NeuralEFKernel(self, chunk_size=chunk_size)

    def forward(self, x_new: Tensor) -> Tensor:
        """``(m, k)`` the eigenfunctions at ``x_new``, mean square about 1 under the data."""
        if self.networks is None:
            raise ValueError("NeuralEigenfunctions must be fitted (call .fit(x)) before evaluation")
        x_new = _check_inputs(x_new, "x_new")
        if x_new.shape[-1] != self.input_mean.shape[-1]:
            raise ValueError(f"x_new must have {self.input_mean.shape[-1]} features, got {x_new.shape[-1]}")
        x_new = x_new.to(self.input_mean)
        raw = self.networks((x_new - self.input_mean) / self.input_scale)
        return (raw / self.output_norms) @ self.rotation * self.signs
