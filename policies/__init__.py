"""Named policy recipes, one file each; `POLICY=<name>` picks one.

A recipe is a module with `RECIPE: dict` (config overrides: backbone, head, normalization, prompt)
and `REAL_CHECKPOINT: str` (what a GPU user with internet loads instead of the tiny preset).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_recipe(name: str) -> dict[str, Any]:
    names = available()
    if name not in names:
        raise ValueError(f"unknown POLICY '{name}'; valid policies: {', '.join(names)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return dict(module.RECIPE)
