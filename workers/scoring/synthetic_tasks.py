"""Small lm-eval tasks for the random checkpoints of `workers.synthetic`, written on the fly.

Random models answer nothing meaningfully, so the tasks are anchored on the reference
model's own greedy behaviour: half of the generation targets (and the correct choice of every
multiple-choice question) are what the reference model generates greedily, the other half
random words. The reference scores about 0.5 exact match and its close variants differ from
it on a few documents, which gives per-sample scores that actually vary between candidates.

Three tasks, each with a ``validation`` and a ``test`` split of different documents:

- ``syn_gen``: generate_until, greedy, exact_match;
- ``syn_mc``: multiple_choice, acc;
- ``syn_ppl``: loglikelihood_rolling, word_perplexity (lower is better).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GEN_TOKENS = 3


def write_synthetic_tasks(directory: str | Path, reference: str | Path, *, n_validation: int = 24,
                          n_test: int = 16, seed: int = 0, prefix: str = "syn") -> Path:
    """Write ``<prefix>_gen``, ``<prefix>_mc`` and ``<prefix>_ppl`` task YAMLs and their data."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(reference)
    model = AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32).eval()
    words = [f"w{i}" for i in range(4, model.config.vocab_size)]
    rng = random.Random(seed)

    def phrase(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    def prompt_and_answer() -> tuple[str, str]:
        # Keep prompts whose greedy continuation is GEN_TOKENS plain words (no EOS, no specials).
        while True:
            prompt = phrase(4)
            ids = torch.tensor([tokenizer.encode(prompt)])
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GEN_TOKENS,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id)
            new = out[0, ids.shape[1]:].tolist()
            if len(new) == GEN_TOKENS and min(new) >= 4:
                return prompt, tokenizer.decode(new, skip_special_tokens=True)

    for split, n in (("validation", n_validation), ("test", n_test)):
        rows = []
        for i in range(n):
            prompt, answer = prompt_and_answer()
            distractor = phrase(GEN_TOKENS)
            rows.append({
                "prompt": prompt,
                "answer": answer if i % 2 == 0 else distractor,
                "choices": [answer, distractor],
                "label": 0,
                "text": phrase(12),
            })
        with open(directory / f"{prefix}_{split}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)

    data = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n"  # JSON strings are YAML scalars
            f"    validation: {json.dumps(str(directory / f'{prefix}_validation.jsonl'))}\n"
            f"    test: {json.dumps(str(directory / f'{prefix}_test.jsonl'))}\n"
            "validation_split: validation\ntest_split: test\n")
    (directory / f"{prefix}_gen.yaml").write_text(
        f"task: {prefix}_gen\n{data}output_type: generate_until\n"
        "doc_to_text: '{{prompt}}'\ndoc_to_target: '{{answer}}'\n"
        f"generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: {GEN_TOKENS}\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1\n")
    (directory / f"{prefix}_mc.yaml").write_text(
        f"task: {prefix}_mc\n{data}output_type: multiple_choice\n"
        "doc_to_text: '{{prompt}}'\ndoc_to_target: '{{label}}'\ndoc_to_choice: '{{choices}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1\n")
    (directory / f"{prefix}_ppl.yaml").write_text(
        f"task: {prefix}_ppl\n{data}output_type: loglikelihood_rolling\n"
        "doc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
        "metadata:\n  version: 1\n")
    return directory


FAULTS_PY = '''"""Fault injection for the scoring harness's tests: process_results hooks that raise."""

import torch


def out_of_memory(doc, results):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by syn fault task)")


def broken(doc, results):
    raise ValueError("injected failure inside evaluation")
'''


def write_fault_tasks(directory: str | Path, prefix: str = "syn",
                      data_files: dict[str, str | Path] | None = None) -> Path:
    """Tasks that fail inside evaluation, after the model has run: ``<prefix>_oom`` raises a real
    ``torch.OutOfMemoryError``, ``<prefix>_broken`` a ``ValueError``.

    Their documents are JSON lines with ``prompt`` and ``answer``: ``data_files`` maps
    ``validation`` and ``test`` to such files (the zoo's, for instance); by default, the data
    `write_synthetic_tasks` wrote into ``directory`` with the same ``prefix``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if data_files is None:
        data_files = {split: directory / f"{prefix}_{split}.jsonl" for split in ("validation", "test")}
    (directory / f"{prefix}_faults.py").write_text(FAULTS_PY)
    data = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    validation: {json.dumps(str(data_files['validation']))}\n"
            f"    test: {json.dumps(str(data_files['test']))}\n"
            "validation_split: validation\ntest_split: test\n")
    for name, hook in (("oom", "out_of_memory"), ("broken", "broken")):
        (directory / f"{prefix}_{name}.yaml").write_text(
            f"task: {prefix}_{name}\n{data}output_type: generate_until\n"
            "doc_to_text: '{{prompt}}'\ndoc_to_target: '{{answer}}'\n"
            f"generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: {GEN_TOKENS}\n  do_sample: false\n"
            f"process_results: !function {prefix}_faults.{hook}\n"
            "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1\n")
    return directory
