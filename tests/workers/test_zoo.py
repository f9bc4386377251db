"""The embedded zoo: determinism, task files, model directories, cache, and (slow) the
"merging matters" numbers on the real build."""

from __future__ import annotations

import filecmp
import json
import math
from pathlib import Path

import pytest


from workers.zoo import (  # noqa: E402
    EXPERTS,
    MARKER,
    MODEL_NAMES,
    ZOO_VERSION,
    build_zoo,
    default_zoo_dir,
    is_built,
    zoo_tasks,
)
from workers.zoo import build as zoo_build  # noqa: E402
from workers.zoo import data as D  # noqa: E402
from workers.zoo.tokenizer import KANA, build_tokenizer, save_tokenizer, vocabulary  # noqa: E402

TINY_SCALE = 0.005  # a few training steps per model: exercises the plumbing only


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.mktemp("zoo") / "zoo-v1", progress=False, train_scale=TINY_SCALE)


# --- tokenizer -------------------------------------------------------------------------------
def test_tokenizer_files_are_deterministic(tmp_path):
    save_tokenizer(build_tokenizer(), tmp_path / "a")
    save_tokenizer(build_tokenizer(), tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in names
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
    assert not mismatch and not errors


def test_tokenizer_roundtrip_with_auto_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(build_tokenizer(), tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    vocab = vocabulary()
    text = f"C:{KANA}=0123456789 ab\n"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id == vocab["<s>"]
    assert ids[1:] == [vocab[c] for c in text]
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("</s>", "<pad>", "<s>")
    assert tok.pad_token_id != tok.eos_token_id


# --- data and tasks ------------------------------------------------------------------------------
def test_task_files_are_deterministic(tmp_path):
    D.write_tasks(tmp_path / "a")
    D.write_tasks(tmp_path / "b")
    for task in D.EVAL_TASKS:
        for split in D.SPLITS:
            rel = Path(task.name) / f"{split}.jsonl"
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        for suffix in ("", "_val"):
            ya = (tmp_path / "a" / f"{task.name}{suffix}.yaml").read_text()
            yb = (tmp_path / "b" / f"{task.name}{suffix}.yaml").read_text()
            assert ya.replace(str((tmp_path / "a").resolve()), "X") == yb.replace(
                str((tmp_path / "b").resolve()), "X"
            )


def test_splits_are_disjoint_and_held_out_of_training():
    splits = D.all_splits()
    for name, per in splits.items():
        val = {p for p, _ in per["validation"]}
        test = {p for p, _ in per["test"]}
        assert len(val) == len(test) == D.SPLIT_SIZE, name
        assert not val & test, name
    held = D.held_out_prompts(splits)
    gens = [
        D.copy_digits, D.copy_letters, D.add_single, D.add_any, D.read_kana_short,
        D.read_mixed, D.add_single_kana, D.add_single_mixed, D.shift_letters,
    ]
    mix = D.Mixture([(g, 1.0) for g in gens], seed=0, exclude=held)
    assert not {mix.sample()[0] for _ in range(5000)} & held


def test_target_needs_both_skills():
    rng = __import__("random").Random(0)
    prompt, answer = D.add_two_digit_kana(rng)
    assert set(prompt) <= set(KANA) | {"+", "="}  # posed in kana ...
    assert answer.isdigit()  # ... answered in digits
    a, b = prompt[:-1].split("+")
    back = str.maketrans(KANA, "0123456789")
    assert int(a.translate(back)) + int(b.translate(back)) == int(answer)


def test_task_yamls_load_through_task_manager_offline(tmp_path):
    from lm_eval.tasks import TaskManager

    D.write_tasks(tmp_path)
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    names = [t.name for t in D.EVAL_TASKS] + [t.name + "_val" for t in D.EVAL_TASKS]
    tasks = tm.load(names)["tasks"]
    splits = D.all_splits()
    for t in D.EVAL_TASKS:
        for name, split in ((t.name, "test"), (t.name + "_val", "validation")):
            task = tasks[name]
            docs = list(task.eval_docs)
            assert [(d["prompt"], d["answer"]) for d in docs] == splits[t.name][split]
            assert task.config.output_type == "generate_until"
            assert task.config.generation_kwargs["do_sample"] is False
            assert task.doc_to_text(docs[0]) == docs[0]["prompt"]


# --- the built zoo (tiny) -------------------------------------------------------------------------
def test_build_layout_and_api(tiny_zoo):
    root = tiny_zoo.root
    assert is_built(root, TINY_SCALE) and not is_built(root)  # a tiny zoo is not "the" zoo
    marker = json.loads((root / MARKER).read_text())
    assert marker["version"] == ZOO_VERSION
    tasks = zoo_tasks(root)
    assert tasks.include_path == root / "tasks"
    assert tasks.names("test") == ["zoo_arith", "zoo_cipher", "zoo_distractor", "zoo_target"]
    assert tasks.names("validation") == [n + "_val" for n in tasks.names("test")]
    assert tasks.target == "zoo_target"
    assert set(tiny_zoo.experts) == set(EXPERTS)
    manifest = tiny_zoo.manifest
    assert set(manifest["quick_scores_test"]) >= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_dirs_load_and_give_finite_logits(tiny_zoo, name):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_zoo.models[name]
    for f in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (path / f).is_file(), f
    with safe_open(str(path / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float32}
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == cfg.get("head_dim", 64) == 64
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        logits = model(**tok(["しな+にく=", "47+38="], return_tensors="pt")).logits
    assert logits.shape[-1] == len(vocabulary())
    assert torch.isfinite(logits).all()


def test_models_share_the_tokenizer(tiny_zoo):
    first = tiny_zoo.models[MODEL_NAMES[0]] / "tokenizer.json"
    for name in MODEL_NAMES[1:]:
        assert (tiny_zoo.models[name] / "tokenizer.json").read_bytes() == first.read_bytes()


def test_cache_marker_prevents_rebuild(tiny_zoo, monkeypatch):
    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("rebuilt a built zoo")

    monkeypatch.setattr(zoo_build, "_build", boom)
    again = build_zoo(tiny_zoo.root, progress=False, train_scale=TINY_SCALE)
    assert again.root == tiny_zoo.root


def test_missing_or_stale_marker_triggers_rebuild(tmp_path, monkeypatch):
    calls = []

    def fake_build(root, progress, train_scale=1.0):
        calls.append(root)
        marker = {"version": ZOO_VERSION, "generator": zoo_build.generator_fingerprint()}
        (root / MARKER).write_text(json.dumps({**marker, "train_scale": train_scale}))

    monkeypatch.setattr(zoo_build, "_build", fake_build)
    root = tmp_path / "zoo"
    root.mkdir()
    (root / "models").mkdir()  # an interrupted build: no marker
    build_zoo(root, progress=False)
    assert len(calls) == 1
    build_zoo(root, progress=False)
    assert len(calls) == 1
    stale = {"version": ZOO_VERSION - 1, "generator": zoo_build.generator_fingerprint()}
    (root / MARKER).write_text(json.dumps(stale))
    build_zoo(root, progress=False)
    assert len(calls) == 2
    other_code = {"version": ZOO_VERSION, "generator": "0" * 16}
    (root / MARKER).write_text(json.dumps(other_code))
    build_zoo(root, progress=False)
    assert len(calls) == 3


def test_moved_zoo_keeps_working(tiny_zoo, tmp_path, monkeypatch):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_zoo.root, moved)
    monkeypatch.setattr(zoo_build, "_build", lambda *a, **k: pytest.fail("rebuilt a moved zoo"))
    zoo = build_zoo(moved, progress=False, train_scale=TINY_SCALE)
    yaml_text = (zoo.tasks.include_path / "zoo_target.yaml").read_text()
    assert str(moved.resolve()) in yaml_text and str(tiny_zoo.root) not in yaml_text


def test_default_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EVOLVE_ZOO_DIR", str(tmp_path / "z"))
    assert default_zoo_dir() == tmp_path / "z"
    monkeypatch.delenv("EVOLVE_ZOO_DIR")
    assert default_zoo_dir().name == f"zoo-v{ZOO_VERSION}"


def test_lm_eval_runs_offline_with_per_sample_logs(tiny_zoo):
    from workers.zoo.evaluate import lm_eval_scores, load_model, load_tokenizer

    model, tok = load_model(tiny_zoo.base), load_tokenizer(tiny_zoo.base)
    names = tiny_zoo.tasks.names("validation")
    scores, samples = lm_eval_scores(
        model, tok, names, tiny_zoo.tasks.include_path, limit=3, return_samples=True
    )
    assert set(scores) == set(names)
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    for name in names:
        assert len(samples[name]) == 3
        assert {"doc", "resps", "exact_match"} <= set(samples[name][0])


# --- the real zoo: merging matters ------------------------------------------------------------------
@pytest.fixture(scope="session")
def real_zoo():
    return build_zoo(progress=False)  # cached: $EVOLVE_ZOO_DIR or ~/.cache/evolve-merge/zoo-v1


def test_the_catalog_knows_each_model_s_tensor_names_before_it_is_built(real_zoo):
    """What pre-flight checks ``space.kinds`` against on an unbuilt zoo is what the build writes."""
    from safetensors import safe_open

    from workers.zoo.catalog import tensor_names

    assert set(real_zoo.models) == set(MODEL_NAMES)
    for name, path in real_zoo.models.items():
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            assert sorted(tensor_names(name)) == sorted(f.keys()), name


@pytest.mark.slow
def test_merging_matters(real_zoo):
    from workers.zoo.build import HAND_MERGES, SKILL_TASKS, TARGET_TASK
    from workers.zoo.evaluate import load_model, load_state
    from workers.zoo.merge import task_arithmetic
    from workers.zoo.train import greedy_accuracy

    splits = D.all_splits()
    tests = {t: per["test"] for t, per in splits.items()}
    states = {n: load_state(p) for n, p in real_zoo.models.items()}
    probe = load_model(real_zoo.base)

    def score(state):
        probe.load_state_dict(state, strict=False)
        return {t: greedy_accuracy(probe, ex) for t, ex in tests.items()}

    parents = {n: score(states[n]) for n in MODEL_NAMES}
    experts = {n: states[n] for n in EXPERTS}
    merge = score(task_arithmetic(states["base"], experts, HAND_MERGES["handset"]))

    for expert, task in SKILL_TASKS.items():  # each expert clearly best at its own skill
        others = max(parents[n][task] for n in MODEL_NAMES if n != expert)
        assert parents[expert][task] >= 0.8 and parents[expert][task] >= others + 0.5, (expert, parents)
    best_parent = max(parents[n][TARGET_TASK] for n in MODEL_NAMES)
    assert best_parent <= 0.2, parents  # nobody is good at the target
    assert merge[TARGET_TASK] >= best_parent + 0.4, (merge, parents)  # the merge is
    for expert in ("arith", "cipher"):  # ... and keeps >= 80% of each expert's own skill
        task = SKILL_TASKS[expert]
        assert merge[task] >= 0.8 * parents[expert][task], (expert, merge, parents)
    # the naive average does not do it: weights matter
    half = score(task_arithmetic(states["base"], experts, HAND_MERGES["uniform_half"]))
    assert half[TARGET_TASK] <= merge[TARGET_TASK] - 0.4, half

    # the fast evaluator used above makes the same decisions as real lm-eval
    from workers.zoo.evaluate import lm_eval_scores, load_tokenizer

    probe.load_state_dict(task_arithmetic(states["base"], experts, HAND_MERGES["handset"]), strict=False)
    via_lm_eval = lm_eval_scores(
        probe, load_tokenizer(real_zoo.base), [TARGET_TASK], real_zoo.tasks.include_path
    )
    assert math.isclose(via_lm_eval[TARGET_TASK], merge[TARGET_TASK])


# --- helpers ------------------------------------------------------------------------------------------
def test_task_arithmetic_semantics():
    import torch

    from workers.zoo.merge import task_arithmetic, tensor_kind

    base = {"model.embed_tokens.weight": torch.zeros(2), "model.layers.0.mlp.up_proj.weight": torch.ones(2)}
    a = {k: v + 1.0 for k, v in base.items()}
    b = {k: v + 2.0 for k, v in base.items()}
    out = task_arithmetic(base, {"a": a, "b": b}, {"a": 1.0, "b": 0.5})
    assert torch.equal(out["model.embed_tokens.weight"], torch.full((2,), 2.0))
    out = task_arithmetic(base, {"a": a, "b": b}, {"a": {"embed": 1.0, "*": 0.0}})
    assert torch.equal(out["model.embed_tokens.weight"], torch.ones(2))
    assert torch.equal(out["model.layers.0.mlp.up_proj.weight"], torch.ones(2))
    assert tensor_kind("model.layers.3.self_attn.q_proj.weight") == "attn"
    assert tensor_kind("model.norm.weight") == "norm"
    with pytest.raises(KeyError):
        task_arithmetic(base, {"a": a}, {"nope": 1.0})


def test_build_threads(monkeypatch):
    monkeypatch.setenv("EVOLVE_ZOO_THREADS", "1")
    assert zoo_build.build_threads() == 1
    monkeypatch.delenv("EVOLVE_ZOO_THREADS")
    assert zoo_build.build_threads() == zoo_build.THREADS == 1
