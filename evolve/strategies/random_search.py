"""Uniform random search over [0, 1]^d: the baseline every other strategy must beat."""

from __future__ import annotations

from evolve.strategies.base import Candidate, Proposal, Result, Strategy


class RandomSearch(Strategy):
    """Independent uniform genomes from ``numpy.random.default_rng(seed)``; results are ignored."""

    name = "random"

    def _ask(self) -> Proposal:
        return Proposal(genome=self.rng.random(self.dimension))

    def _tell(self, candidate: Candidate, result: Result, fitness: float) -> None:
        pass
