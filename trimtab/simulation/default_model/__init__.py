"""The tiny default model trimtab builds for itself (no model downloads at run time)."""

from trimtab.simulation.default_model.build import ModelBuildError, build_default_model, build_info, recipe_hash

__all__ = ["ModelBuildError", "build_default_model", "build_info", "recipe_hash"]
