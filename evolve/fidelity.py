"""The rules of a multi-fidelity run (``fidelity:``), apart from the loop that applies them:
which low results are promoted to a full evaluation (`promotes`), and when the low rung is
dropped because it cannot rank (`low_rung_flat`). Pure functions: the loop decides with them,
and the CLI, the dashboard and the tests read a stored run back with them."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from evolve.store import EvaluationRecord, EvaluationStatus, Fidelity

FLAT_LOW_RESULTS = 10  # this many equal low results, the first ones: the low rung cannot rank


def low_rung_flat(lows_in_finish_order: list[float]) -> float | None:
    """The score the first `FLAT_LOW_RESULTS` low results all share, or None while they are
    fewer or differ. A rung on which every candidate scores the same tells the strategy
    nothing and promotes only ties, so such a run would never leave its start; it is scored in
    full instead, as a run without ``fidelity:`` would be."""
    first = lows_in_finish_order[:FLAT_LOW_RESULTS]
    return first[0] if len(first) == FLAT_LOW_RESULTS and len(set(first)) == 1 else None


def low_rung_dropped(evaluations: Iterable[EvaluationRecord], searched: Collection[str]) -> float | None:
    """`low_rung_flat` over a stored run: the complete low results of its ``searched``
    candidates, in the order they finished (the order the loop decided in)."""
    lows = sorted((e for e in evaluations if e.fidelity == Fidelity.LOW and e.candidate_id in searched
                   and e.status == EvaluationStatus.COMPLETE), key=lambda e: (e.finished_at, e.id))
    return low_rung_flat([e.fitness for e in lows])


def promotes(low: float, earlier_lows: list[float], best_full: float, fraction: float,
             optimism: float = 0.0) -> bool:
    """Successive halving's rule, asynchronously (ASHA): a low result is promoted when it ranks
    within the top ``fraction`` of the low results so far, itself included, or when it is
    above the best full result so far (``best_full``: it could be the new best) by more than
    ``optimism``, how far the promoted low results were above their full ones on average.

    A tie goes to the earlier result: low scores on a few documents tie often, and promoting
    every tie would spend full evaluations on candidates the low fidelity cannot tell apart.
    The second clause is what keeps a run climbing once the low rung saturates: near the
    optimum most low scores tie at the top, and without it none would be promoted again.
    ``optimism`` is the winner's curse, measured by the run itself: a low result on a few
    documents that beats the best is mostly a lucky one (on the kind pair, 10 of 11 lows of
    7/8 promoted past a best of 0.859 came out at 0.55-0.84 in full), and without it most full
    evaluations went to such candidates. Where low and full results agree, as near a
    saturated rung, it is about 0 and the clause promotes as before.
    """
    ahead = sum(1 for f in earlier_lows if f >= low)
    return ahead < math.ceil(fraction * (len(earlier_lows) + 1)) or low - optimism > best_full
