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
]
