"""Merge methods: a registry of small pure tensor functions (see `base`)."""

from workers.merge_methods.base import MergeMethod, ParamSpec
from workers.merge_methods.registry import METHODS, get_method

__all__ = ["METHODS", "MergeMethod", "ParamSpec", "get_method"]
