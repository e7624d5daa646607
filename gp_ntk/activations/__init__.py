r"""Elementwise activations and their dual kernels.

Each activation :math:`\phi` is one small, stateless, picklable value (a frozen dataclass) that
supplies

* ``__call__(x)``: :math:`\phi(x)` itself (used to build finite networks, e.g. in tests);
* ``dual(var1, cov, var2)``: :math:`\mathbb E[\phi(u)\phi(v)]`, the one method a subclass must write;
* ``derivative_dual(var1, cov, var2)``: :math:`\mathbb E[\phi'(u)\phi'(v)]`;
* ``duals(var1, cov, var2)``: both at once;
* ``variance(var)`` / ``derivative_variance(var)``: the same at :math:`u = v`, in O(n),

for :math:`(u, v) \sim \mathcal N\big(0, \begin{bmatrix}\Sigma_{xx} & \Sigma_{xy}\\ \Sigma_{xy} & \Sigma_{yy}\end{bmatrix}\big)`,
where ``var1`` = :math:`\Sigma_{xx}`, ``cov`` = :math:`\Sigma_{xy}`, ``var2`` = :math:`\Sigma_{yy}`
broadcast against each other. The layer recursion in :mod:`gp_ntk.recursion` knows nothing
else about an activation.

The derivative dual defaults to Price's theorem [Price1958]_,

.. math::
    \frac{\partial}{\partial\Sigma_{xy}}\,\mathbb E[\phi(u)\phi(v)] = \mathbb E[\phi'(u)\phi'(v)],

evaluated by autograd on ``Activation.dual``; every activation shipped here overrides it
with a closed form. Adding an activation means one class decorated with
:func:`~gp_ntk.activations.base.register_activation`, in the module of its family (:mod:`~gp_ntk.activations.relu_family`,
:mod:`~gp_ntk.activations.smooth`, :mod:`~gp_ntk.activations.stax`; :mod:`~gp_ntk.activations.numerical`
for quadrature; the base classes and the registry live in :mod:`~gp_ntk.activations.base`): it then has a name in :data:`~gp_ntk.activations.base.ACTIVATIONS` (if it gives one) and its
:meth:`~gp_ntk.activations.base.Activation.examples` are checked by the test suite (against brute-force quadrature,
Monte Carlo, Price's theorem and, where :meth:`~gp_ntk.activations.base.Activation.stax_layer` names one, neural-tangents).

Derivatives are taken almost everywhere, as autograd takes them: the step and sign functions
have :math:`\phi' = 0`, so their NTK contribution through the derivative dual vanishes.

Parameters follow neural-tangents' ``stax`` layers [Novak2020]_ (``Erf(a, b, c)``,
``Sin(a, b, c)``, ``Exp(a, b)``, ``Gaussian(a, b)``, ``Rbf(gamma)``, ``Monomial(degree)``,
``Polynomial(coef)``, ...), so that a kernel built there ports by name.

.. [Price1958] R. Price, "A useful theorem for nonlinear devices having Gaussian inputs",
   IRE Transactions on Information Theory 4(2), 1958.
.. [Novak2020] R. Novak et al., "Neural Tangents: fast and easy infinite neural networks in
   Python", ICLR 2020.
"""

from __future__ import annotations

from .base import (
    ACTIVATION_CLASSES,
    ACTIVATIONS,
    Activation,
    CorrelationActivation,
    activation_examples,
    get_activation,
    register_activation,
)
from .numerical import Numerical
from .relu_family import ABReLU, Abs, ArcCos, Identity, LeakyReLU, ReLU, Step
from .smooth import GELU
from .stax import Cos, Erf, Exp, Gaussian, Monomial, Polynomial, Rbf, Sign, Sin

__all__ = [
    "Activation",
    "CorrelationActivation",
    "ABReLU",
    "Abs",
    "ArcCos",
    "Cos",
    "Erf",
    "Exp",
    "GELU",
    "Gaussian",
    "Identity",
    "LeakyReLU",
    "Monomial",
    "Numerical",
    "Polynomial",
    "ReLU",
    "Rbf",
    "Sign",
    "Sin",
    "Step",
    "ACTIVATIONS",
    "ACTIVATION_CLASSES",
    "activation_examples",
    "get_activation",
    "register_activation",
]
