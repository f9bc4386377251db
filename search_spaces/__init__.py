"""Torch-free descriptions of merge recipes and the spaces a search explores.

Nothing in this package may import torch: the driver, the store and the strategies
work on recipes without ever touching weights.
"""
