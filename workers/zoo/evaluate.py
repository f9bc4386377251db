"""Scoring zoo models through real lm-eval (HF backend, offline) and loading merges."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from workers.offline import go_offline
from workers.zoo.build import EXPERTS, Zoo


def load_model(path: str | os.PathLike):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    model.eval()
    return model


def load_tokenizer(path: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_state(path: str | os.PathLike):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def merged_model(zoo: Zoo, weights: Mapping[str, object]):
    """The task-arithmetic merge ``base + sum_i w_i (expert_i - base)`` as a live HF model."""
    from workers.zoo.merge import task_arithmetic

    model = load_model(zoo.base)
    base = load_state(zoo.base)
    experts = {n: load_state(zoo.models[n]) for n in EXPERTS if n in weights}
    state = task_arithmetic(base, experts, weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise RuntimeError(f"state mismatch: missing={missing} unexpected={unexpected}")
    return model


def task_manager_for(include_path: str | os.PathLike):
    """A TaskManager that indexes only the zoo's tasks (skipping lm-eval's built-in
    catalogue, whose indexing dominates the run time for tasks this small)."""
    go_offline()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path), include_defaults=False)


def lm_eval_scores(
    model,
    tokenizer,
    tasks: Sequence[str],
    include_path: str | os.PathLike,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    return_samples: bool = False,
    task_manager=None,
):
    """Exact-match score per task via ``lm_eval.simple_evaluate`` with an in-memory HFLM.

    Returns ``{task: score}`` (and the per-sample records when ``return_samples``)."""
    go_offline()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=task_manager or task_manager_for(include_path),
        log_samples=True,
        limit=limit,
        bootstrap_iters=0,
        verbosity="ERROR",
    )
    scores = {t: float(out["results"][t]["exact_match,none"]) for t in tasks}
    if return_samples:
        return scores, out["samples"]
    return scores
