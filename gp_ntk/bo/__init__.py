r"""Bayesian optimisation with infinite-width network kernels as BoTorch surrogates.

Every gp_ntk kernel is a GPyTorch ``Kernel``, so adopting one in BoTorch is one argument::

    model = SingleTaskGP(train_X, train_Y, covar_module=ScaleKernel(gp_ntk.NNGPKernel(depth=3)),
                         input_transform=gp_ntk.bo.CenteredNormalize(d, bounds))

This module adds what that line leaves to the user:

* :class:`~gp_ntk.bo.CenteredNormalize` (:mod:`gp_ntk.bo.transforms`), an input transform onto
  :math:`[-1, 1]^d`. NNGP/NTK kernels are dot-product kernels: they see inputs through angles
  at the origin. BoTorch's ``Normalize`` puts every input in :math:`[0, 1]^d`, a single
  orthant, where all pairwise angles are small and the kernel is nearly constant
  (``docs/kernels.md#11-pitfall-centre-your-inputs``). Centring the search box on the origin
  restores the angles.
* :func:`~gp_ntk.bo.bo_kernel` and :func:`~gp_ntk.bo.make_bo_model` (:mod:`gp_ntk.bo.models`, priors in
  :mod:`gp_ntk.bo.priors`): a ``ScaleKernel``-wrapped network kernel with
  priors that make its hyperparameters identifiable, inside a ``SingleTaskGP``
  (:class:`~gp_ntk.bo.NetworkSingleTaskGP`, whose predictions evaluate the kernel once) with the
  centring transform and ``Standardize``. The choices and the measurements behind them are in
  ``docs/bo.md``. The default is the depth-3 NTK of ReLU squared (``ArcCos(2)``) with one
  first-layer weight variance per feature, divided by its prior standard deviations (:class:`~gp_ntk.kernels.UnitVarianceKernel`;
  a network kernel's prior variance otherwise grows towards the corners of the box).
* ``UncentredInputWarning`` (also ``gp_ntk.UncentredInputWarning``): issued once
  per process when a network kernel's training inputs all lie in :math:`[0, 1]^d`, as with
  BoTorch's ``Normalize``.
* :func:`~gp_ntk.bo.fit_bo_model` (:mod:`gp_ntk.bo.fitting`): BoTorch's ``fit_gpytorch_mll``, retried
  from the initial hyperparameters with 100x more Cholesky jitter when it fails, and
  :func:`~gp_ntk.bo.warm_start`, which starts a new fit at the previous one's hyperparameters.
* :func:`~gp_ntk.bo.run_bo` (:mod:`gp_ntk.bo.loop`): a complete, fault-tolerant BO loop (Sobol initial design, fit, acquisition
  optimisation, evaluation) that reports and recovers from NaN objective values, candidates
  outside the bounds or repeating earlier ones, failed fits and failed acquisition
  optimisations, and records the wall time of every iteration. What it cannot recover from
  (the objective raising, say) stops it with :class:`~gp_ntk.bo.BOError`, which keeps every evaluation
  made so far as ``error.result``.

* :class:`~gp_ntk.bo.TrainedEnsembleModel` (:mod:`gp_ntk.bo.ensemble`), the trained ensemble of wide
  networks as a BoTorch model, and :class:`~gp_ntk.bo.GradientEnhancedGP` (:mod:`gp_ntk.bo.gradient`),
  an exact GP on values and gradients.
* :mod:`gp_ntk.bo.pathwise`: BoTorch's pathwise feature maps (``draw_matheron_paths``,
  Thompson sampling) for the network kernels, registered on import of this package.

BoTorch is an optional dependency of gp_ntk (``pip install gp_ntk[bo]``); only this package
imports it, so ``import gp_ntk`` leaves GPyTorch's global settings as they are (importing
BoTorch changes them: Cholesky up to 4096 points, CG off).

BoTorch maximises; pass ``negate=True`` to BoTorch test functions (or negate your objective)
to minimise.

.. [Li2024] Y. L. Li, T. G. J. Rudner, A. G. Wilson. A Study of Bayesian Neural Network
    Surrogates for Bayesian Optimization. ICLR 2024.
.. [Balandat2020] M. Balandat et al. BoTorch: A Framework for Efficient Monte-Carlo Bayesian
    Optimization. NeurIPS 2020.
.. [Ament2023] S. Ament, S. Daulton, D. Eriksson, M. Balandat, E. Bakshy. Unexpected
    Improvements to Expected Improvement for Bayesian Optimization. NeurIPS 2023.
"""

from __future__ import annotations

try:
    import botorch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess by tests/test_package.py
    raise ImportError("gp_ntk.bo needs BoTorch, an optional dependency: pip install gp_ntk[bo]") from error

from ..kernels import UncentredInputWarning, UnitVarianceKernel
from ..validation import check_bounds
from . import ensemble, fitting, gradient, loop, models, pathwise, priors, transforms
from .ensemble import TrainedEnsembleModel, fit_nngp_variances
from .fitting import FitReport, fit_bo_model, warm_start
from .gradient import GradientEnhancedGP
from .loop import EVENT_KINDS, BOError, BOEvent, BOResult, run_bo
from .models import BO_KERNEL_NAMES, NetworkSingleTaskGP, bo_kernel, make_bo_model
from .transforms import CenteredNormalize

__all__ = [
    "BOError",
    "BOEvent",
    "BOResult",
    "BO_KERNEL_NAMES",
    "CenteredNormalize",
    "EVENT_KINDS",
    "FitReport",
    "GradientEnhancedGP",
    "NetworkSingleTaskGP",
    "TrainedEnsembleModel",
    "UncentredInputWarning",
    "UnitVarianceKernel",
    "bo_kernel",
    "check_bounds",
    "ensemble",
    "fit_bo_model",
    "fit_nngp_variances",
    "fitting",
    "gradient",
    "loop",
    "make_bo_model",
    "models",
    "pathwise",
    "priors",
    "run_bo",
    "transforms",
    "warm_start",
]
