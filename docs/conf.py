"""Sphinx configuration: the API reference from docstrings, with the Markdown pages alongside.

Build (what CI runs): ``python -m sphinx -W -n --keep-going -b html docs docs/_build/html``.
``-n`` reports every cross-reference that resolves to nothing inside gp_ntk; references to
other libraries are not checked (no inventories are fetched at build time).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "gp_ntk"
author = "gp_ntk developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
# torch.autograd.Function and torch functions carry docstrings written for another build
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
# Each module lists its own references (``.. [Cho2009]``), as BoTorch's do; Sphinx's citations
# are global, so the same reference in two modules is not an error here.
suppress_warnings = ["ref.citation"]

# Names from torch, GPyTorch, BoTorch, linear_operator, numpy and the standard library: there is
# no inventory to resolve them against offline, so they are not checked.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|gpytorch|botorch|linear_operator|numpy|np|collections|typing|dataclasses)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Kernel|Prior|Interval|Positive|LinearOperator|Model|Posterior)"),
    (r"py:.*", r"(optional|callable|Callable|Sequence|Mapping|Iterable|Any|Literal)"),
    (r"py:class", r"(int|float|str|bool|dict|list|tuple|type|object|None|Exception)"),
    # private bases (or bases in private modules) shown by show-inheritance
    (r"py:class", r"gp_ntk(\.\w+)*\._\w+(\.\w+)*"),
    (r"py:class", r"nn\.Module"),
    # BoTorch's names in the signature a subclass of SingleTaskGP inherits
    (r"py:class", r"(Mean|Likelihood|InputTransform|OutcomeTransform|_DefaultType)"),
]


def _resolve_top_level_alias(app, env, node, contnode):
    """Resolve ``gp_ntk.NTKKernel``-style references to where the object is documented.

    The docstrings name public objects by their top-level import (``gp_ntk.X``), as users write
    them; autodoc documents each in its defining module (``gp_ntk.kernels.ntk.NTKKernel``).
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("gp_ntk."):
        return None
    import importlib

    module_name, _, attribute = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        return None
    home = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not home or not qualname or f"{home}.{qualname}" == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"{home}.{qualname}", node, contnode
    )


def _skip_foreign_values(app, what, name, obj, skip, options):
    # a dataclass default such as ``fn = torch.tanh`` would be documented with torch's docstring
    if what == "class" and callable(obj) and str(getattr(obj, "__module__", "") or "").startswith("torch"):
        return True
    return None


def setup(app):
    app.connect("missing-reference", _resolve_top_level_alias)
    app.connect("autodoc-skip-member", _skip_foreign_values)
