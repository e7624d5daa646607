r"""Training dynamics of infinitely wide networks: what they predict after gradient descent.

A wide network trained by full-batch gradient descent on the mean squared error

.. math::
    \mathcal L(f) = \frac{1}{2N} \sum_{i=1}^{n} \lVert f(x_i) - y_i \rVert^2, \qquad N = \text{train\_y.numel()},

with learning rate :math:`\eta` evolves as its linearisation, i.e. by kernel gradient descent
with the NTK :math:`\Theta` [Jacot2018]_ [Lee2019]_. On the training inputs, with
:math:`\Theta = V \operatorname{diag}(\lambda) V^\top`,

.. math::
    f_t(X) = y + e^{-\eta t \Theta / N} (f_0(X) - y), \qquad
    f_t(x_*) = f_0(x_*) + \Theta_{*X}\, \Theta^{-1} (I - e^{-\eta t \Theta / N}) (y - f_0(X)).

Averaging over random initialisations (:math:`f_0 \sim \mathcal{GP}(0, \mathcal K)`, the NNGP)
gives a Gaussian process at every time :math:`t`, with mean
:math:`\Theta_{*X} \Theta^{-1}(I - e^{-\eta t\Theta/N})\, y` and covariance (``get="ntk"``,
[Lee2019]_ eq. 16)

.. math::
    \mathcal K_{**} + M_t \mathcal K_{XX} M_t^\top - M_t \mathcal K_{X*} - \mathcal K_{*X} M_t^\top,
    \qquad M_t = \Theta_{*X} \Theta^{-1} (I - e^{-\eta t \Theta / N}).

Training only the read-out layer replaces :math:`\Theta` by the NNGP :math:`\mathcal K`
(``get="nngp"``; at :math:`t = \infty` the exact NNGP posterior); replacing the prior
:math:`\mathcal K` by :math:`\Theta` gives the NTKGP ensemble of [He2020]_ (``get="ntkgp"``;
at :math:`t = \infty` the posterior of :math:`\mathcal{GP}(0, \Theta)`). In general a regime is
a pair (dynamics kernel :math:`D`, prior kernel :math:`P`): ``nngp`` = :math:`(\mathcal K,
\mathcal K)`, ``ntk`` = :math:`(\Theta, \mathcal K)`, ``ntkgp`` = :math:`(\Theta, \Theta)`.

Conventions are those of neural-tangents' ``predict`` module, so that the same kernel matrices
give the same numbers:

* the loss averages over all :math:`N` target entries (``n`` for ``(n,)`` targets, ``n k`` for
  ``(n, k)``), so the modes decay as :math:`e^{-\eta t \lambda_i / N}`;
* ``diag_reg`` adds :math:`\text{diag\_reg} \cdot \operatorname{mean}(\operatorname{diag} D_{XX})`
  to the dynamics kernel (absolute with ``diag_reg_absolute_scale=True``); the prior kernel in
  the ``ntk`` covariance is not regularised;
* ``t=None`` is :math:`t = \infty`; ``t`` a float or a 1-D tensor (a leading time dimension);
* without test inputs the predictions are on the training inputs.

Numerics. The dynamics kernel is eigendecomposed once per regime and reused for every ``t``
(``O(n^3)`` once, then ``O(mn)`` per time for a mean and ``O(m^2 n + m n^2)`` for a
covariance); :math:`(1 - e^{-x})` is evaluated with ``expm1`` and
:math:`(1 - e^{-\lambda s})/\lambda` tends to :math:`s` as :math:`\lambda \to 0` without a
division by zero; rounding-negative eigenvalues are clipped to 0; :math:`t = \infty` is a
Cholesky solve. Covariances are symmetrised and rounding-negative variances clipped to 0 (a
:class:`RuntimeWarning` says so when a clipped value is larger than rounding explains). In
float32 a :class:`RuntimeWarning` recommends float64 when the regularised kernel's condition
number makes float32 results unreliable.

.. [Jacot2018] A. Jacot, F. Gabriel, C. Hongler. Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks. NeurIPS 2018.
.. [Lee2019] J. Lee, L. Xiao, S. Schoenholz, Y. Bahri, R. Novak, J. Sohl-Dickstein, J. Pennington.
    Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent. NeurIPS 2019.
.. [He2020] B. He, B. Lakshminarayanan, Y. W. Teh. Bayesian Deep Ensembles via the Neural
    Tangent Kernel. NeurIPS 2020.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from linear_operator.operators import DenseLinearOperator
from torch import Tensor

__all__ = [
    "Gaussian",
    "EnsemblePredictor",
    "GPInference",
    "ensemble_from_matrices",
    "gp_inference",
    "gp_inference_from_matrices",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "max_learning_rate",
]

GETS = ("nngp", "ntk", "ntkgp")
# (dynamics kernel, prior kernel) of each regime
_REGIMES = {"nngp": ("nngp", "nngp"), "ntk": ("ntk", "nngp"), "ntkgp": ("ntk", "ntk")}
# float32 results lose about cond * eps relative accuracy; beyond this, recommend float64
_FLOAT32_CONDITION_LIMIT = 1e4


class Gaussian(NamedTuple):
    """Mean ``(T?, ..., m[, k])`` and covariance ``(T?, ..., m, m)`` (None when not computed)."""

    mean: Tensor
    covariance: Tensor | None


# ----------------------------------------------------------------------------- checks


def _check_square(matrix: Tensor, name: str) -> Tensor:
    if not isinstance(matrix, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(matrix).__name__}")
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (n, n) matrix, got shape {tuple(matrix.shape)}")
    if not matrix.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {matrix.dtype}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} has non-finite entries")
    return matrix


def _check_targets(train_y: Tensor, n: int, like: Tensor) -> Tensor:
    """Targets as ``(n, k)`` in the kernel's dtype."""
    if not isinstance(train_y, Tensor):
        raise ValueError(f"train_y must be a torch.Tensor, got {type(train_y).__name__}")
    if train_y.dim() not in (1, 2) or train_y.shape[0] != n:
        raise ValueError(f"train_y must have shape ({n},) or ({n}, k), got {tuple(train_y.shape)}")
    if not bool(torch.isfinite(train_y).all()):
        raise ValueError("train_y has non-finite entries")
    y = train_y.to(like)
    return y.unsqueeze(-1) if y.dim() == 1 else y


def _check_scalar(value: float, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return float(value)


def _check_get(get: str) -> str:
    if get not in GETS:
        raise ValueError(f"get must be one of {GETS}, got {get!r}")
    return get


def _scaled_times(t: float | Tensor | None, learning_rate: float, like: Tensor) -> tuple[Tensor | None, bool]:
    """``eta * t`` as a 1-D tensor (None for infinity) and whether ``t`` was a scalar."""
    if t is None:
        return None, True
    if isinstance(t, bool):
        raise ValueError(f"t must be a number, a 1-D tensor or None, got {t!r}")
    times = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if times.dim() > 1:
        raise ValueError(f"t must be a number or a 1-D tensor of times, got shape {tuple(times.shape)}")
    if bool(torch.isnan(times).any()) or bool((times < 0).any()):
        raise ValueError(f"t must be non-negative (None or inf for the end of training), got {t!r}")
    if times.dim() == 0 and bool(torch.isinf(times)):
        return None, True
    if bool(torch.isinf(times).any()):
        raise ValueError("a tensor of times must be finite; ask for t=None (infinity) separately")
    return times.reshape(-1) * learning_rate, times.dim() == 0


def _regularized(matrix: Tensor, diag_reg: float, absolute: bool) -> Tensor:
    if diag_reg == 0:
        return matrix
    scale = diag_reg if absolute else diag_reg * matrix.diagonal().mean()
    return matrix + scale * torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)


def _warn_float32(condition: float, dtype: torch.dtype, where: str) -> None:
    if dtype in (torch.float32, torch.float16, torch.bfloat16) and condition > _FLOAT32_CONDITION_LIMIT:
        warnings.warn(
            f"{where}: the regularised training kernel has condition number ~{condition:.2g}, too large "
            f"for {dtype} (results may be off by ~{condition * torch.finfo(dtype).eps:.1g} relative); "
            "use float64 or a larger diag_reg",
            RuntimeWarning,
            stacklevel=3,
        )


def _symmetric_psd(covariance: Tensor) -> Tensor:
    """Symmetrise and clip rounding-negative variances; warn when a clipped one is not rounding."""
    covariance = 0.5 * (covariance + covariance.mT)
    variances = covariance.diagonal(dim1=-2, dim2=-1)
    negative = variances < 0
    if bool(negative.any()):
        scale = variances.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(covariance.dtype).tiny)
        worst = float((-variances / scale).amax())
        if worst > math.sqrt(torch.finfo(covariance.dtype).eps):
            warnings.warn(
                f"clipped {int(negative.sum())} negative variance(s) to 0, the largest {worst:.2g} of the "
                "largest variance: more than rounding; the training kernel may be ill-conditioned "
                "(use float64 or diag_reg > 0)",
                RuntimeWarning,
                stacklevel=3,
            )
        covariance = covariance.clone()
        covariance.diagonal(dim1=-2, dim2=-1).clamp_(min=0)
    return covariance


# ----------------------------------------------------------------------------- spectral pieces


class _Eigenbasis:
    """Eigendecomposition of a regularised training kernel, clipped to non-negative eigenvalues."""

    def __init__(self, matrix: Tensor, where: str) -> None:
        evals, self.evecs = torch.linalg.eigh(0.5 * (matrix + matrix.mT))
        top = float(evals[-1].clamp_min(0))
        self.evals = evals.clamp_min(0)
        smallest = float(self.evals[0])
        _warn_float32(top / smallest if smallest > 0 else math.inf, matrix.dtype, where)

    def decay(self, s: Tensor, normalization: float) -> Tensor:
        r""":math:`e^{-\lambda_i s / N}`, ``(T, n)``."""
        return torch.exp(-self.evals * s[:, None] / normalization)

    def learnt(self, s: Tensor, normalization: float) -> Tensor:
        r""":math:`1 - e^{-\lambda_i s / N}` by ``expm1``, ``(T, n)``."""
        return -torch.expm1(-self.evals * s[:, None] / normalization)

    def inverse_learnt(self, s: Tensor, normalization: float) -> Tensor:
        r""":math:`(1 - e^{-\lambda_i s/N}) / \lambda_i`, equal to :math:`s/N` at :math:`\lambda_i = 0`.

        Written :math:`(s/N)\, h(x)` with :math:`x = \lambda_i s / N` and
        :math:`h(x) = -\mathrm{expm1}(-x)/x`, whose series :math:`1 - x/2` is used below
        :math:`x = 10^{-6}` so that no :math:`0/0` arises (nor a NaN gradient).
        """
        scaled = s[:, None] / normalization
        x = self.evals * scaled
        small = x < 1e-6
        safe_x = torch.where(small, torch.ones_like(x), x)
        h = torch.where(small, 1 - 0.5 * x, -torch.expm1(-safe_x) / safe_x)
        return scaled * h


class _Cholesky:
    """Cholesky factor of a regularised training kernel, for ``t = infinity``."""

    def __init__(self, matrix: Tensor, where: str) -> None:
        factor, info = torch.linalg.cholesky_ex(0.5 * (matrix + matrix.mT))
        diagonal = factor.diagonal()
        # a factorisation that succeeds only through rounding (condition ~ 1 / (n eps)) is singular
        condition = float((diagonal.max() / diagonal.min()) ** 2) if int(info) == 0 else math.inf
        if not condition * matrix.shape[0] * torch.finfo(matrix.dtype).eps < 1:
            raise ValueError(
                f"{where}: the training kernel is singular (Cholesky failed at t = infinity); "
                "pass diag_reg > 0 or a finite t"
            )
        self.factor = factor
        _warn_float32(condition, matrix.dtype, where)

    def solve(self, rhs: Tensor) -> Tensor:
        """:math:`A^{-1} B` for ``rhs`` of shape ``(..., n, r)``."""
        return torch.cholesky_solve(rhs, self.factor)


def _times_view(tensor: Tensor, batch_dims: int) -> Tensor:
    """``(T, n[, r])`` -> ``(T, 1 x batch_dims, n[, r])`` to broadcast against batched test kernels."""
    return tensor.reshape(tensor.shape[:1] + (1,) * batch_dims + tensor.shape[1:])


# ----------------------------------------------------------------------------- one linearised network


def gradient_descent_mse(
    ntk_train_train: Tensor,
    train_y: Tensor,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Callable[..., Tensor | tuple[Tensor, Tensor]]:
    r"""Outputs of one linearised network trained by gradient descent on the MSE, in closed form.

    .. math::
        f_t(X) = f_0(X) - V \operatorname{diag}(1 - e^{-\eta t\lambda/N}) V^\top (f_0(X) - y),\quad
        f_t(x_*) = f_0(x_*) + \Theta_{*X} V \operatorname{diag}\Big(\tfrac{1 - e^{-\eta t\lambda/N}}
        {\lambda}\Big) V^\top (y - f_0(X)).

    Args:
        ntk_train_train: the (analytic or empirical) NTK on the training inputs, ``(n, n)``.
        train_y: ``(n,)`` or ``(n, k)`` targets.
        learning_rate: :math:`\eta`.
        diag_reg: regularisation added to the NTK's diagonal, relative to its mean diagonal.
        diag_reg_absolute_scale: ``diag_reg`` in absolute units.

    Returns:
        ``predict(t=None, f0_train=0.0, f0_test=None, ntk_test_train=None)``: ``f_t(X)`` when
        ``f0_test`` is None, else ``(f_t(X), f_t(x_*))`` (``ntk_test_train`` is ``(m, n)``).
        ``t`` is a float, a 1-D tensor (outputs gain a leading time dimension) or None
        (:math:`t = \infty`, where :math:`f(X) = y`).
    """
    ntk = _check_square(ntk_train_train, "ntk_train_train")
    n = ntk.shape[0]
    y = _check_targets(train_y, n, ntk)
    squeeze = train_y.dim() == 1
    learning_rate = _check_scalar(learning_rate, "learning_rate", positive=True)
    diag_reg = _check_scalar(diag_reg, "diag_reg")
    regularized = _regularized(ntk, diag_reg, diag_reg_absolute_scale)
    normalization = float(y.numel())
    cache: dict[str, object] = {}

    def as_targets(value, name: str, rows: int) -> Tensor:
        value = torch.as_tensor(value, dtype=ntk.dtype, device=ntk.device)
        if value.dim() == 0:
            return value.expand(rows, y.shape[1])
        if value.shape not in ((rows,), (rows, y.shape[1])) or (value.dim() == 1 and not squeeze):
            raise ValueError(
                f"{name} must be a number or shaped like train_y with {rows} rows, got {tuple(value.shape)}"
            )
        return value.unsqueeze(-1) if value.dim() == 1 else value

    def out(value: Tensor) -> Tensor:
        return value.squeeze(-1) if squeeze else value

    def predict(
        t: float | Tensor | None = None,
        f0_train: float | Tensor = 0.0,
        f0_test: Tensor | None = None,
        ntk_test_train: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        s, scalar = _scaled_times(t, learning_rate, ntk)
        f0_x = as_targets(f0_train, "f0_train", n)
        if f0_test is not None:
            if ntk_test_train is None or ntk_test_train.dim() != 2 or ntk_test_train.shape[1] != n:
                raise ValueError(f"ntk_test_train must be an (m, {n}) matrix when f0_test is given")
            f0_star = as_targets(f0_test, "f0_test", ntk_test_train.shape[0])
        residual = y - f0_x
        if s is None:
            f_train = y.clone()
            if f0_test is None:
                return out(f_train)
            if "cholesky" not in cache:
                cache["cholesky"] = _Cholesky(regularized, "gradient_descent_mse")
            f_test = f0_star + ntk_test_train.to(ntk) @ cache["cholesky"].solve(residual)
            return out(f_train), out(f_test)
        if "eigen" not in cache:
            cache["eigen"] = _Eigenbasis(regularized, "gradient_descent_mse")
        eigen: _Eigenbasis = cache["eigen"]
        projected = eigen.evecs.mT @ residual  # (n, k)
        f_train = f0_x + eigen.evecs @ (eigen.learnt(s, normalization)[..., None] * projected)
        f_train = f_train[0] if scalar else f_train
        if f0_test is None:
            return out(f_train)
        coefficients = eigen.evecs @ (eigen.inverse_learnt(s, normalization)[..., None] * projected)
        f_test = f0_star + ntk_test_train.to(ntk) @ coefficients
        f_test = f_test[0] if scalar else f_test
        return out(f_train), out(f_test)

    return predict


def max_learning_rate(
    ntk_train_train: Tensor, y_train_size: int | None = None, momentum: float = 0.0, eps: float = 1e-12
) -> float:
    r"""Largest learning rate for which gradient descent on the MSE converges in the linear regime.

    With the loss :math:`\frac{1}{2N}\lVert f - y\rVert^2`, gradient descent contracts iff
    :math:`\eta < 2N / \lambda_{\max}(\Theta)`; with heavy-ball momentum :math:`\beta` the bound is
    :math:`2(1 + \beta) N / \lambda_{\max}`. ``y_train_size`` is :math:`N` (default ``n``).
    """
    ntk = _check_square(ntk_train_train, "ntk_train_train")
    momentum = _check_scalar(momentum, "momentum")
    size = ntk.shape[0] if y_train_size is None else y_train_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"y_train_size must be a positive integer, got {y_train_size!r}")
    top = float(torch.linalg.eigvalsh(0.5 * (ntk + ntk.mT))[-1])
    return 2.0 * (1.0 + momentum) * size / (top + eps)


# ----------------------------------------------------------------------------- ensembles from matrices


def _pick(kernels: dict[str, Tensor | None], name: str, argument: str) -> Tensor:
    value = kernels[name]
    if value is None:
        raise ValueError(f"{argument}: the {name} matrix is needed for this prediction, got None")
    return value


def ensemble_from_matrices(
    nngp_train_train: Tensor | None,
    ntk_train_train: Tensor | None,
    train_y: Tensor,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Callable[..., Gaussian]:
    r"""Mean and covariance of the infinite ensemble of trained infinite-width networks.

    Args:
        nngp_train_train, ntk_train_train: ``(n, n)`` NNGP :math:`\mathcal K` and NTK
            :math:`\Theta` on the training inputs; either may be None when no requested regime
            needs it (``nngp`` needs :math:`\mathcal K` only, ``ntkgp`` :math:`\Theta` only).
        train_y: ``(n,)`` or ``(n, k)``.
        learning_rate, diag_reg, diag_reg_absolute_scale: as in :func:`gradient_descent_mse`.

    Returns:
        ``predict(t=None, get="ntk", nngp_test_train=None, ntk_test_train=None,
        nngp_test_test=None, ntk_test_test=None, compute_cov=True) -> Gaussian``. Test-train
        matrices are ``(..., m, n)`` (any batch shape), test-test ``(..., m, m)``; without
        test-train matrices the prediction is on the training inputs. Shapes:
        mean ``(T?, ..., m)`` (``(T?, ..., m, k)`` for 2-D targets), covariance
        ``(T?, ..., m, m)`` shared by the ``k`` outputs; ``T`` present when ``t`` is a tensor.
    """
    train = {"nngp": nngp_train_train, "ntk": ntk_train_train}
    like = None
    for name, matrix in train.items():
        if matrix is not None:
            _check_square(matrix, f"{name}_train_train")
            like = matrix if like is None else like
    if like is None:
        raise ValueError("nngp_train_train and ntk_train_train are both None")
    if nngp_train_train is not None and ntk_train_train is not None:
        if nngp_train_train.shape != ntk_train_train.shape:
            raise ValueError("nngp_train_train and ntk_train_train must have the same shape")
        train["ntk"] = ntk_train_train.to(nngp_train_train)
    n = like.shape[0]
    y = _check_targets(train_y, n, like)
    squeeze = train_y.dim() == 1
    learning_rate = _check_scalar(learning_rate, "learning_rate", positive=True)
    diag_reg = _check_scalar(diag_reg, "diag_reg")
    normalization = float(y.numel())
    eigen_cache: dict[str, _Eigenbasis] = {}
    cholesky_cache: dict[str, _Cholesky] = {}

    def regularized(name: str) -> Tensor:
        return _regularized(_pick(train, name, f"{name}_train_train"), diag_reg, diag_reg_absolute_scale)

    def eigen(name: str) -> _Eigenbasis:
        if name not in eigen_cache:
            eigen_cache[name] = _Eigenbasis(regularized(name), "gradient_descent_mse_ensemble")
        return eigen_cache[name]

    def cholesky(name: str) -> _Cholesky:
        if name not in cholesky_cache:
            cholesky_cache[name] = _Cholesky(regularized(name), "gradient_descent_mse_ensemble")
        return cholesky_cache[name]

    def predict(
        t: float | Tensor | None = None,
        get: str = "ntk",
        nngp_test_train: Tensor | None = None,
        ntk_test_train: Tensor | None = None,
        nngp_test_test: Tensor | None = None,
        ntk_test_test: Tensor | None = None,
        compute_cov: bool = True,
    ) -> Gaussian:
        dynamics_name, prior_name = _REGIMES[_check_get(get)]
        s, scalar = _scaled_times(t, learning_rate, like)
        test_train = {"nngp": nngp_test_train, "ntk": ntk_test_train}
        test_test = {"nngp": nngp_test_test, "ntk": ntk_test_test}
        on_train = test_train[dynamics_name] is None
        if on_train:
            mean, covariance = _on_training_inputs(dynamics_name, prior_name, s, compute_cov)
        else:
            d_td = test_train[dynamics_name].to(like)
            if d_td.shape[-1] != n:
                raise ValueError(f"{dynamics_name}_test_train must be (..., m, {n}), got {tuple(d_td.shape)}")
            p_td = p_tt = None
            if compute_cov:
                p_td = _pick(test_train, prior_name, f"{prior_name}_test_train").to(like)
                p_tt = _pick(test_test, prior_name, f"{prior_name}_test_test").to(like)
                if p_tt.shape[-1] != d_td.shape[-2] or p_tt.shape[-2] != d_td.shape[-2]:
                    raise ValueError(
                        f"{prior_name}_test_test must be (..., m, m) with m = {d_td.shape[-2]}, "
                        f"got {tuple(p_tt.shape)}"
                    )
            if s is None:
                mean, covariance = _at_infinity(dynamics_name, prior_name, d_td, p_td, p_tt)
            else:
                mean, covariance = _at_times(dynamics_name, prior_name, s, d_td, p_td, p_tt)
        if s is not None and scalar:
            mean = mean[0]
            covariance = None if covariance is None else covariance[0]
        if covariance is not None:
            covariance = _symmetric_psd(covariance)
        return Gaussian(mean.squeeze(-1) if squeeze else mean, covariance)

    def _on_training_inputs(dynamics_name, prior_name, s, compute_cov):
        if s is None:
            covariance = torch.zeros(n, n, dtype=like.dtype, device=like.device) if compute_cov else None
            return y.clone(), covariance
        basis = eigen(dynamics_name)
        projected = basis.evecs.mT @ y
        mean = basis.evecs @ (basis.learnt(s, normalization)[..., None] * projected)
        if not compute_cov:
            return mean, None
        decay = basis.decay(s, normalization)  # (T, n)
        if dynamics_name == prior_name:
            # P = V diag(lambda) V^T (regularised), so e P e = V diag(lambda e^2) V^T
            covariance = (basis.evecs * (basis.evals * decay**2)[:, None, :]) @ basis.evecs.mT
        else:
            propagator = (basis.evecs * decay[:, None, :]) @ basis.evecs.mT
            covariance = propagator @ _pick(train, prior_name, f"{prior_name}_train_train") @ propagator
        return mean, covariance

    def _at_infinity(dynamics_name, prior_name, d_td, p_td, p_tt):
        factor = cholesky(dynamics_name)
        mean = d_td @ factor.solve(y)
        if p_tt is None:
            return mean, None
        if dynamics_name == prior_name:
            return mean, p_tt - d_td @ factor.solve(d_td.mT)
        gain = factor.solve(d_td.mT).mT  # M = D_td D^{-1}, (..., m, n)
        cross = gain @ p_td.mT
        prior_train = _pick(train, prior_name, f"{prior_name}_train_train")
        return mean, p_tt - cross - cross.mT + gain @ prior_train @ gain.mT

    def _at_times(dynamics_name, prior_name, s, d_td, p_td, p_tt):
        basis = eigen(dynamics_name)
        batch_dims = d_td.dim() - 2
        in_basis = d_td @ basis.evecs  # (..., m, n), once per call
        weights = _times_view(basis.inverse_learnt(s, normalization), batch_dims)  # (T, 1.., n)
        projected = basis.evecs.mT @ y  # (n, k)
        mean = in_basis @ (weights[..., None] * projected)
        if p_tt is None:
            return mean, None
        if dynamics_name == prior_name:
            weights_2t = _times_view(basis.inverse_learnt(2 * s, normalization), batch_dims)
            return mean, p_tt - (in_basis * weights_2t.unsqueeze(-2)) @ in_basis.mT
        gain = in_basis * weights.unsqueeze(-2)  # M_t V, (T, ..., m, n)
        cross = gain @ (basis.evecs.mT @ p_td.mT)  # M_t P_Xt
        prior_train = _pick(train, prior_name, f"{prior_name}_train_train")
        prior_in_basis = basis.evecs.mT @ prior_train @ basis.evecs
        return mean, p_tt - cross - cross.mT + gain @ prior_in_basis @ gain.mT

    return predict


def gp_inference_from_matrices(
    nngp_train_train: Tensor | None,
    ntk_train_train: Tensor | None,
    train_y: Tensor,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> Callable[..., Gaussian]:
    r"""Posteriors at :math:`t = \infty`: ``nngp`` (NNGP posterior), ``ntk`` (trained ensemble),
    ``ntkgp`` (:math:`\mathcal{GP}(0, \Theta)` posterior), by Cholesky solves.

    Same matrices and returned ``predict`` as :func:`ensemble_from_matrices` without ``t``.
    """
    ensemble = ensemble_from_matrices(
        nngp_train_train, ntk_train_train, train_y, 1.0, diag_reg, diag_reg_absolute_scale
    )

    def predict(get: str = "nngp", **matrices) -> Gaussian:
        return ensemble(None, get, **matrices)

    return predict


# ----------------------------------------------------------------------------- kernel-level wrappers


def _kernel_matrices(kernel, x1: Tensor, x2: Tensor, need_ntk: bool) -> tuple[Tensor, Tensor | None]:
    """NNGP and NTK matrices from one pass, or a plain GPyTorch kernel's matrix as the NNGP."""
    if hasattr(kernel, "nngp_and_ntk"):
        return kernel.nngp_and_ntk(x1, x2)
    if need_ntk:
        raise ValueError(
            f"kernel must offer nngp_and_ntk for the ntk and ntkgp regimes; {type(kernel).__name__} "
            "does not (a plain GPyTorch kernel serves as the NNGP for get='nngp' only)"
        )
    return kernel(x1, x2).to_dense(), None


def _check_inputs(x: Tensor, name: str, num_features: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}")
    x = x.unsqueeze(-1) if x.dim() == 1 else x
    if x.dim() < 2 or x.shape[-2] == 0:
        raise ValueError(f"{name} must be (..., n, d) with n >= 1, got {tuple(x.shape)}")
    if num_features is not None and x.shape[-1] != num_features:
        raise ValueError(f"{name} must have {num_features} features like train_x, got {x.shape[-1]}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite entries")
    return x


def _as_distribution(gaussian: Gaussian, multi_output: bool) -> MultivariateNormal:
    # a lazy covariance: torch's MultivariateNormal would factorise a dense one at once, and the
    # covariance of a trained ensemble is singular on the training inputs as t grows
    if not multi_output:
        return MultivariateNormal(gaussian.mean, DenseLinearOperator(gaussian.covariance))
    mean = gaussian.mean.movedim(-1, -2)  # (..., k, m)
    covariance = gaussian.covariance.unsqueeze(-3).expand(*mean.shape, mean.shape[-1])
    batch = MultivariateNormal(mean, DenseLinearOperator(covariance))
    return MultitaskMultivariateNormal.from_batch_mvn(batch, task_dim=-1)


class _KernelPredictor:
    """Shared state of the kernel-level predictors: training matrices computed once, lazily."""

    def __init__(self, kernel, train_x: Tensor, train_y: Tensor, needs_ntk: bool) -> None:
        self.kernel = kernel
        self.train_x = _check_inputs(train_x, "train_x")
        if self.train_x.dim() != 2:
            raise ValueError(f"train_x must be (n, d), got {tuple(self.train_x.shape)}")
        if not isinstance(train_y, Tensor) or train_y.dim() not in (1, 2) or train_y.shape[0] != len(train_x):
            raise ValueError(
                f"train_y must be ({len(train_x)},) or ({len(train_x)}, k), got "
                f"{tuple(getattr(train_y, 'shape', ()))}"
            )
        self.train_y = train_y
        self.multi_output = train_y.dim() == 2
        self.has_ntk = hasattr(kernel, "nngp_and_ntk")
        with torch.no_grad():
            nngp, ntk = _kernel_matrices(kernel, self.train_x, self.train_x, needs_ntk)
        self.nngp_train_train, self.ntk_train_train = nngp.detach(), None if ntk is None else ntk.detach()

    def test_matrices(self, test_x: Tensor, get: str, compute_cov: bool) -> dict[str, Tensor | None]:
        needs_ntk = get != "nngp"
        if needs_ntk and not self.has_ntk:
            _kernel_matrices(self.kernel, test_x, test_x, True)  # raises the explanation
        test_x = _check_inputs(test_x, "test_x", self.train_x.shape[-1]).to(self.nngp_train_train)
        nngp_td, ntk_td = _kernel_matrices(self.kernel, test_x, self.train_x, needs_ntk)
        matrices = {"nngp_test_train": nngp_td, "ntk_test_train": ntk_td}
        if compute_cov:
            nngp_tt, ntk_tt = _kernel_matrices(self.kernel, test_x, test_x, needs_ntk)
            matrices.update(nngp_test_test=nngp_tt, ntk_test_test=ntk_tt)
        return matrices

    def finish(self, gaussian: Gaussian, compute_cov: bool):
        if not compute_cov:
            return gaussian.mean
        return _as_distribution(gaussian, self.multi_output)


class EnsemblePredictor(_KernelPredictor):
    """Returned by :func:`gradient_descent_mse_ensemble`; call it as ``pred(test_x, t, get)``."""

    def __init__(self, kernel, train_x, train_y, learning_rate, diag_reg, diag_reg_absolute_scale) -> None:
        super().__init__(kernel, train_x, train_y, needs_ntk=False)
        self.learning_rate = learning_rate
        self._predict = ensemble_from_matrices(
            self.nngp_train_train,
            self.ntk_train_train,
            train_y,
            learning_rate,
            diag_reg,
            diag_reg_absolute_scale,
        )

    def __call__(
        self,
        test_x: Tensor | None = None,
        t: float | Tensor | None = None,
        get: str = "ntk",
        compute_cov: bool = True,
    ) -> MultivariateNormal | Tensor:
        r"""The ensemble at time ``t`` on ``test_x`` (training inputs when None).

        Returns a ``MultivariateNormal`` (mean ``(T?, ..., m)``, covariance ``(T?, ..., m, m)``;
        a batch over times when ``t`` is a tensor) or, for ``(n, k)`` targets, a
        ``MultitaskMultivariateNormal`` with mean ``(T?, ..., m, k)`` and a block-diagonal
        covariance (the outputs are independent, with one shared covariance); with
        ``compute_cov=False``, only the mean tensor.
        """
        _check_get(get)
        if get != "nngp" and not self.has_ntk:
            _kernel_matrices(self.kernel, self.train_x, self.train_x, True)
        if test_x is None:
            return self.finish(self._predict(t, get, compute_cov=compute_cov), compute_cov)
        matrices = self.test_matrices(test_x, get, compute_cov)
        return self.finish(self._predict(t, get, compute_cov=compute_cov, **matrices), compute_cov)


class GPInference(_KernelPredictor):
    """Returned by :func:`gp_inference`; call it as ``post(test_x, get)``."""

    def __init__(self, kernel, train_x, train_y, diag_reg, diag_reg_absolute_scale) -> None:
        super().__init__(kernel, train_x, train_y, needs_ntk=False)
        self._predict = gp_inference_from_matrices(
            self.nngp_train_train, self.ntk_train_train, train_y, diag_reg, diag_reg_absolute_scale
        )

    def __call__(
        self, test_x: Tensor | None = None, get: str = "nngp", compute_cov: bool = True
    ) -> MultivariateNormal | Tensor:
        """Posterior on ``test_x`` (training inputs when None); shapes as in :class:`EnsemblePredictor`."""
        _check_get(get)
        if get != "nngp" and not self.has_ntk:
            _kernel_matrices(self.kernel, self.train_x, self.train_x, True)
        if test_x is None:
            return self.finish(self._predict(get, compute_cov=compute_cov), compute_cov)
        matrices = self.test_matrices(test_x, get, compute_cov)
        return self.finish(self._predict(get, compute_cov=compute_cov, **matrices), compute_cov)


def gradient_descent_mse_ensemble(
    kernel,
    train_x: Tensor,
    train_y: Tensor,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> EnsemblePredictor:
    r"""The infinite ensemble of infinitely wide networks trained by gradient descent on the MSE.

    Args:
        kernel: any kernel with ``nngp_and_ntk(x1, x2)`` (every :class:`~gp_ntk.NNGPKernel` and
            :class:`~gp_ntk.NTKKernel`); a plain GPyTorch kernel is taken as the NNGP and serves
            ``get="nngp"`` only.
        train_x: ``(n, d)``; train_y: ``(n,)`` or ``(n, k)``.
        learning_rate, diag_reg, diag_reg_absolute_scale: as in :func:`gradient_descent_mse`.

    Returns:
        :class:`EnsemblePredictor`, ``pred(test_x=None, t=None, get="ntk", compute_cov=True)``.

    Example:
        >>> from gp_ntk import dynamics
        >>> k = gp_ntk.NTKKernel(depth=3, weight_variance=2.0, bias_variance=0.1).double()
        >>> train_x = torch.randn(8, 2, dtype=torch.float64)
        >>> train_y, test_x = torch.sin(train_x[:, 0]), torch.randn(5, 2, dtype=torch.float64)
        >>> pred = dynamics.gradient_descent_mse_ensemble(k, train_x, train_y)
        >>> mvn = pred(test_x, t=torch.tensor([1.0, 10.0, 100.0]), get="ntk")  # batch of 3 times
        >>> mvn.mean.shape
        torch.Size([3, 5])
    """
    return EnsemblePredictor(kernel, train_x, train_y, learning_rate, diag_reg, diag_reg_absolute_scale)


def gp_inference(
    kernel, train_x: Tensor, train_y: Tensor, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False
) -> GPInference:
    r"""Exact posteriors (:math:`t = \infty`) of the ``nngp``, ``ntk`` and ``ntkgp`` regimes.

    ``post(test_x, get="nngp")`` is the NNGP GP posterior, ``"ntk"`` the trained ensemble at
    :math:`t = \infty`, ``"ntkgp"`` the posterior of :math:`\mathcal{GP}(0, \Theta)`; ``diag_reg``
    plays the role of a noise variance (relative to the mean training-kernel diagonal).
    """
    return GPInference(kernel, train_x, train_y, diag_reg, diag_reg_absolute_scale)
