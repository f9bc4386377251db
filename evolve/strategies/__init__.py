"""Search strategies behind one ask/tell interface (torch-free).

    from evolve.strategies import make_strategy, Result
    strategy = make_strategy("cma", space.dimension, seed=0, popsize=16)
    for candidate in strategy.ask(4):           # may return fewer than asked
        ...                                     # decode candidate.genome, score it
        strategy.tell(candidate.id, Result.success(0.42, samples={"gsm8k": [1, 0, 1]}))
    # resume: evolve.loop.SearchLoop.replay re-asks and re-tells a fresh strategy from the store
"""

from evolve.strategies.base import (
    AlreadyToldError,
    Candidate,
    Proposal,
    Result,
    Strategy,
    StrategyError,
    UnknownCandidateError,
)
from evolve.strategies.registry import STRATEGIES, make_strategy, settings_of, strategy_names

__all__ = [
    "AlreadyToldError", "Candidate", "Proposal", "Result", "Strategy",
    "StrategyError", "UnknownCandidateError", "STRATEGIES", "make_strategy",
    "settings_of", "strategy_names",
]
