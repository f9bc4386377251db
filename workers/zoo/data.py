"""Synthetic skills of the zoo: deterministic generators, eval splits and lm-eval task YAMLs.

Every example is a ``(prompt, answer)`` pair of plain strings; models are trained to emit the
answer followed by EOS. Evaluation is greedy generation scored by exact match.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from workers.zoo.tokenizer import DIGITS, KANA, LOWER

Example = tuple[str, str]
Generator = Callable[[random.Random], Example]

TO_KANA = str.maketrans(DIGITS, KANA)


def kana(s: str) -> str:
    """Write the digits of ``s`` in the zoo's second language."""
    return s.translate(TO_KANA)


def _digits(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(DIGITS) for _ in range(rng.randint(lo, hi)))


def _letters(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(LOWER) for _ in range(rng.randint(lo, hi)))


def _two_digit(rng: random.Random) -> int:
    return rng.randint(10, 99)


# --- base pre-training skills ------------------------------------------------------------
def copy_digits(rng: random.Random) -> Example:
    s = _digits(rng, 1, 6)
    return f"C:{s}=", s


def copy_letters(rng: random.Random) -> Example:
    s = _letters(rng, 1, 6)
    return f"C:{s}=", s


def add_single(rng: random.Random) -> Example:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"{a}+{b}=", str(a + b)


# --- expert skills -----------------------------------------------------------------------
def add_two_digit(rng: random.Random) -> Example:
    """zoo_arith: two-digit addition in plain digits."""
    a, b = _two_digit(rng), _two_digit(rng)
    return f"{a}+{b}=", str(a + b)


def add_any(rng: random.Random) -> Example:
    """Arithmetic training mix: operands of one or two digits."""
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return f"{a}+{b}=", str(a + b)


def read_kana(rng: random.Random) -> Example:
    """zoo_cipher: copy a kana numeral out in plain digits."""
    s = _digits(rng, 3, 6)
    return f"C:{kana(s)}=", s


def read_kana_short(rng: random.Random) -> Example:
    s = _digits(rng, 1, 6)
    return f"C:{kana(s)}=", s


def read_mixed(rng: random.Random) -> Example:
    """Copy a numeral written partly in kana, partly in digits."""
    s = _digits(rng, 1, 6)
    mixed = "".join(kana(c) if rng.random() < 0.5 else c for c in s)
    return f"C:{mixed}=", s


def add_single_kana(rng: random.Random) -> Example:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"{kana(str(a))}+{kana(str(b))}=", str(a + b)


def add_single_mixed(rng: random.Random) -> Example:
    """Single-digit addition with each operand in kana or in digits at random."""
    a, b = str(rng.randint(0, 9)), str(rng.randint(0, 9))
    sa = kana(a) if rng.random() < 0.5 else a
    sb = kana(b) if rng.random() < 0.5 else b
    return f"{sa}+{sb}=", str(int(a) + int(b))


def shift_letters(rng: random.Random) -> Example:
    """zoo_distractor: replace every letter by the next one (z wraps to a)."""
    s = _letters(rng, 2, 5)
    return f"N:{s}=", "".join(LOWER[(LOWER.index(c) + 1) % 26] for c in s)


def add_two_digit_kana(rng: random.Random) -> Example:
    """zoo_target: two-digit addition posed in kana, answered in plain digits."""
    a, b = _two_digit(rng), _two_digit(rng)
    return f"{kana(str(a))}+{kana(str(b))}=", str(a + b)


# --- evaluation tasks ----------------------------------------------------------------------
@dataclass(frozen=True)
class EvalTask:
    name: str  # lm-eval task name of the test split; the validation split is ``name + "_val"``
    skill: str
    description: str
    generator: Generator
    seed: int


EVAL_TASKS: tuple[EvalTask, ...] = (
    EvalTask("zoo_arith", "arith", "two-digit addition in plain digits", add_two_digit, 101),
    EvalTask("zoo_cipher", "cipher", "read a 3-6 digit kana numeral out in plain digits", read_kana, 102),
    EvalTask("zoo_distractor", "distractor", "shift every letter to the next one", shift_letters, 103),
    EvalTask("zoo_target", "target", "two-digit addition posed in kana, answered in digits", add_two_digit_kana, 104),
)
SPLITS = ("validation", "test")
SPLIT_SIZE = 150
MAX_GEN_TOKS = 8


def make_splits(task: EvalTask, n: int = SPLIT_SIZE) -> dict[str, list[Example]]:
    """Disjoint validation/test samples (distinct prompts), deterministic in ``task.seed``."""
    rng = random.Random(task.seed)
    seen: set[str] = set()
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        while len(out[split]) < n:
            prompt, answer = task.generator(rng)
            if prompt not in seen:
                seen.add(prompt)
                out[split].append((prompt, answer))
    return out


def all_splits() -> dict[str, dict[str, list[Example]]]:
    return {t.name: make_splits(t) for t in EVAL_TASKS}


def held_out_prompts(splits: dict[str, dict[str, list[Example]]]) -> frozenset[str]:
    return frozenset(p for per in splits.values() for exs in per.values() for p, _ in exs)


class Mixture:
    """An endless, seeded stream of training examples drawn from weighted generators,
    skipping every prompt held out for evaluation."""

    def __init__(self, parts: Iterable[tuple[Generator, float]], seed: int, exclude: frozenset[str]):
        parts = list(parts)
        self.generators = [g for g, _ in parts]
        self.weights = [w for _, w in parts]
        self.rng = random.Random(seed)
        self.exclude = exclude

    def sample(self) -> Example:
        while True:
            gen = self.rng.choices(self.generators, self.weights)[0]
            ex = gen(self.rng)
            if ex[0] not in self.exclude:
                return ex

    def batch(self, n: int) -> list[Example]:
        return [self.sample() for _ in range(n)]


# --- lm-eval task files ------------------------------------------------------------------------
def _yaml_task(task: EvalTask, name: str, data_dir: Path, eval_split: str) -> str:
    files = {s: str((data_dir / f"{s}.jsonl").resolve()) for s in SPLITS}
    split_lines = (
        "validation_split: validation\ntest_split: test\n"
        if eval_split == "test"
        else "validation_split: validation\n"
    )
    # json.dumps gives valid YAML double-quoted scalars for the paths.
    return (
        f"# Generated by workers.zoo; {task.description} ({eval_split} split).\n"
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    validation: {json.dumps(files['validation'])}\n"
        f"    test: {json.dumps(files['test'])}\n"
        f"{split_lines}"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n"
        '  until: ["\\n"]\n'
        "  do_sample: false\n"
        f"  max_gen_toks: {MAX_GEN_TOKS}\n"
        "metric_list:\n"
        "  - metric: exact_match\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        "  version: 1\n"
    )


def write_tasks(directory: Path, splits: dict[str, dict[str, list[Example]]] | None = None) -> None:
    """Write ``<directory>/<task>/{validation,test}.jsonl`` and one YAML per task and split."""
    directory = Path(directory)
    splits = splits if splits is not None else all_splits()
    for task in EVAL_TASKS:
        data_dir = directory / task.name
        data_dir.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            lines = [
                json.dumps({"prompt": p, "answer": a}, ensure_ascii=False)
                for p, a in splits[task.name][split]
            ]
            (data_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_task_yamls(directory)


def write_task_yamls(directory: Path) -> None:
    """(Re)write the task YAMLs so that their data paths point into ``directory``."""
    directory = Path(directory)
    for task in EVAL_TASKS:
        data_dir = directory / task.name
        (directory / f"{task.name}.yaml").write_text(_yaml_task(task, task.name, data_dir, "test"))
        (directory / f"{task.name}_val.yaml").write_text(
            _yaml_task(task, task.name + "_val", data_dir, "validation")
        )


def task_yamls_point_into(directory: Path) -> bool:
    directory = Path(directory)
    want = json.dumps(str((directory / EVAL_TASKS[0].name / "test.jsonl").resolve()))
    try:
        return want in (directory / f"{EVAL_TASKS[0].name}.yaml").read_text()
    except OSError:
        return False
