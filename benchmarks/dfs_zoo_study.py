"""Study: a pair of tiny zoo models on which a layer PATH beats both parents and the best
parameter-space (task-arithmetic) merge on the target task (issue 11, "A zoo on which layer
paths matter").

Every design trains two experts from zoo v1's *base* (read-only; zoo v1 is never changed):
a reader R (model A of the path: embeddings, final norm, head and tokenizer are R's) and an
adder D (model B). Target: ``zoo_target`` (two-digit addition posed in kana, answered in
digits) -- neither R (reads kana, cannot add two-digit numbers) nor D (adds, cannot read kana)
solves it alone.

For each design it reports, on the validation split (search) and test split (final, real
lm-eval through HFLM):
  * each parent;
  * the best global task-arithmetic merge base + wR dR + wD dD over a grid;
  * the best *layer-wise* task-arithmetic merge (one weight pair per layer) over a grid --
    the PS space's strongest form here; a positional path (layer k from R or D, in place) is
    a 0/1 point of it;
  * the best layer path: hand-written candidates plus random paths over R's and D's layers
    (lengths 2-8, input scales 1), applied to a live padded model with
    `workers.data_flow.DataFlowSources` (the product's own fold), the winner exported with
    `workers.data_flow.write_path_model` and re-scored from disk with lm-eval.

    nice -n 10 .venv/bin/python benchmarks/dfs_zoo_study.py [--designs split,dense] [--paths 300]

Output: a table on stdout and ``<out>/study.json`` (default out: a temp dir).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from workers.zoo import data as D
from workers.zoo import data_flow_pair
from workers.zoo.build import Zoo, default_zoo_dir
from workers.zoo.data_flow_pair import with_prefix_block
from workers.zoo.tokenizer import KANA, build_tokenizer, vocabulary
from workers.zoo.train import Phase, greedy_accuracy, train

SEED = 4321
TASKS = {"target": "zoo_target", "arith": "zoo_arith", "cipher": "zoo_cipher"}
CIPHER_MIX = [(D.read_kana_short, 0.3), (D.read_mixed, 0.3), (D.add_single_kana, 0.2), (D.add_single_mixed, 0.2)]
BASE_MIX = [(D.copy_digits, 0.35), (D.copy_letters, 0.25), (D.add_single, 0.4)]
REPLAY = [(g, w * 0.2) for g, w in BASE_MIX]


def layers(*ks):
    pats = tuple(f".layers.{k}." for k in ks)
    return lambda n: any(p in n for p in pats)


def design_phases(design: str, exclude, scale: float):
    """{expert: [Phase, ...]} -- each expert starts from zoo v1's base and runs its phases in order."""
    kana_rows = [vocabulary()[c] for c in KANA]

    def P(name, mix, steps, lr, seed, **kw):
        return Phase(name, D.Mixture(mix, seed, exclude), max(1, round(steps * scale)), lr, seed=seed + 100, **kw)

    if design == "split":
        # Skills localised in depth, but both experts also move the *other* layers (a second,
        # conflicting skill there), so their task vectors overlap everywhere.
        return {
            "reader": [
                P("reader.read", CIPHER_MIX, 300, 3e-3, SEED + 1,
                  trainable=lambda n: layers(0)(n) or "embed_tokens" in n, embedding_rows=kana_rows),
                P("reader.conflict", [(D.shift_letters, 0.5), *CIPHER_MIX], 300, 1e-3, SEED + 2,
                  trainable=layers(1, 2, 3)),
            ],
            "adder": [
                P("adder.add", [(D.add_any, 0.8), *REPLAY], 1000, 3e-3, SEED + 3,
                  trainable=layers(1, 2, 3), embedding_noise=0.7),
                P("adder.conflict", [(D.shift_letters, 0.5), (D.add_any, 0.5)], 300, 1e-3, SEED + 4,
                  trainable=layers(0)),
            ],
        }
    pair = data_flow_pair.phases(exclude, scale)  # the product's pair (workers/zoo/data_flow_pair.py)
    if design == "dense":
        # The naive pair: both experts fine-tune every transformer block. The adder is the
        # zoo pair's adder (same recipe and seed).
        return {
            "reader": [
                P("reader.read", CIPHER_MIX, 300, 1e-3, SEED + 5,
                  trainable=lambda n: ".layers." in n or "embed_tokens" in n, embedding_rows=kana_rows),
            ],
            "adder": pair["adder"],
        }
    if design == "prefix":
        # The reader's skill lives in one block (layer 0), not in the embeddings (the kana rows
        # stay the base's random ones), so a merge must place R's layer 0 in front of the
        # adder's blocks; the adder is the dense design's (same recipe and seed), trained with
        # embedding noise so that it tolerates a foreign block before its own layer 0.
        return {
            "reader": [
                P("reader.read", [*CIPHER_MIX, *REPLAY], 400, 3e-3, SEED + 7, trainable=layers(0)),
            ],
            "adder": design_phases("dense", exclude, scale)["adder"],
        }
    if design == "stack":
        # Stacking: the reader is the base with one extra block *in front* (5 layers; only that
        # block trains, from an exact identity), so its skill is "turn kana into what the
        # base's first block expects". This design became the zoo's data-flow pair.
        return pair
    raise SystemExit(f"unknown design {design!r}")


def load(path):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    m.eval()
    return m


def save(model, path: Path):
    from workers.zoo.tokenizer import save_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    model.generation_config.do_sample = False
    model.save_pretrained(path, safe_serialization=True)
    save_tokenizer(build_tokenizer(), path)


def build_pair(design: str, base_dir: Path, out: Path, scale: float, log) -> dict[str, Path]:
    splits = D.all_splits()
    exclude = D.held_out_prompts(splits)
    paths = {}
    for expert, phases in design_phases(design, exclude, scale).items():
        dest = out / design / expert
        paths[expert] = dest
        if (dest / "model.safetensors").is_file():
            log(f"  {design}/{expert}: cached")
            continue
        model = load(base_dir)
        if design == "stack" and expert == "reader":
            model = with_prefix_block(model)
        for ph in phases:
            t0 = time.time()
            losses = train(model, ph)
            log(f"  {design}/{expert} {ph.name}: {ph.steps} steps, final loss {sum(losses[-20:]) / 20:.4f}, "
                f"{time.time() - t0:.0f}s")
        save(model, dest)
    return paths


def state(path: Path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


class Scorer:
    def __init__(self, n: int):
        splits = D.all_splits()
        self.val = {k: splits[t]["validation"][:n] for k, t in TASKS.items()}

    def __call__(self, model, which=("target",)) -> dict[str, float]:
        return {k: greedy_accuracy(model, self.val[k]) for k in which}


def ta_state(base, dr, dd, w_of):
    """base + wR(name) dR + wD(name) dD; w_of(name) -> (wR, wD)."""
    out = {}
    for n, b in base.items():
        wr, wd = w_of(n)
        out[n] = b + wr * (dr[n] - b) + wd * (dd[n] - b)
    return out


def layer_index(name: str):
    if ".layers." not in name:
        return None
    return int(name.split(".layers.")[1].split(".")[0])


def with_index(name: str, k: int) -> str:
    if k is None or ".layers." not in name:
        return name
    head, tail = name.split(".layers.", 1)
    return f"{head}.layers.{k}.{tail.split('.', 1)[1]}"


def ps_search(base_dir, pair, score, log):
    base, d = state(base_dir), state(pair["adder"])
    best = None
    for align, r in reader_states(pair).items():
        g, lw = _ps_grids(base_dir, base, r, d, score, log, align)
        if best is None or g[2] + lw[2] > best[0][2] + best[1][2]:
            best = (g, lw)
    return best


def reader_states(pair):
    """The reader's state dict under each alignment with the base's layers: "positional"
    (layer k <-> k); for a 5-layer reader also "shifted" (its layers 1-4, the base's 0-3, <->
    0-3; its front block has no counterpart in a same-shape merge)."""
    r = state(pair["reader"])
    out = {"positional": r}
    if max(layer_index(n) or 0 for n in r) >= 4:
        out["shifted"] = {(n if layer_index(n) is None else with_index(n, layer_index(n) - 1)): t
                          for n, t in r.items() if layer_index(n) != 0}
    return out


def _ps_grids(base_dir, base, r, d, score, log, align):
    model = load(base_dir)
    results = []
    grid = [0.0, 0.5, 0.75, 1.0, 1.25]
    for wr, wd in itertools.product(grid, grid):
        model.load_state_dict(ta_state(base, r, d, lambda n, wr=wr, wd=wd: (wr, wd)), strict=False)
        results.append(("global", {"wR": wr, "wD": wd}, score(model)["target"]))
    results = [(k, dict(w, align=align), s) for k, w, s in results]
    best_global = max(results, key=lambda x: x[2])
    log(f"  [{align}] PS global grid ({len(results)}): best target {best_global[2]:.3f} at {best_global[1]}")
    # Layer-wise: per layer k a pair (wR_k, wD_k) from a small set; outside layers (embeddings,
    # final norm, head) take wR = 1 (the kana rows live there), wD = 0/1 (both tried).
    pairs = [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (1.0, 1.0)]
    lw = []
    for outside_wd in (0.0, 1.0):
        for combo in itertools.product(pairs, repeat=4):
            def w_of(n, combo=combo, outside_wd=outside_wd):
                k = layer_index(n)
                return (1.0, outside_wd) if k is None else combo[k]

            model.load_state_dict(ta_state(base, r, d, w_of), strict=False)
            lw.append(("layerwise", {"outside_wD": outside_wd, "layers(wR,wD)": combo, "align": align},
                       score(model)["target"]))
    best_lw = max(lw, key=lambda x: x[2])
    log(f"  [{align}] PS layer-wise grid ({len(lw)}): best target {best_lw[2]:.3f} at {best_lw[1]}")
    return best_global, best_lw


def path_search(pair, n_random: int, score, log, seed: int = 0):
    from search_spaces.data_flow import LayerPath, PathStep
    from workers.data_flow import DataFlowSources, padded_reference

    ra, db = str(pair["reader"]), str(pair["adder"])
    depth = 8
    live_dir = Path(pair["reader"]).parent / "padded8"
    padded_reference(ra, depth, live_dir)
    live = load(live_dir)
    sources = DataFlowSources([ra, db])
    nr = int(load(ra).config.num_hidden_layers)
    layers_all = [(ra, i) for i in range(nr)] + [(db, i) for i in range(4)]
    tag = {ra: "R", db: "D"}

    def mk(spec):
        return LayerPath(ra, tuple(PathStep(m, i) for m, i in spec))

    hand = [
        [(ra, 0), (ra, 1), (ra, 2), (ra, 3)],
        [(db, 0), (db, 1), (db, 2), (db, 3)],
        [(ra, 0), (db, 1), (db, 2), (db, 3)],
        [(ra, 0), (ra, 1), (db, 2), (db, 3)],
        [(ra, 0), (db, 0), (db, 1), (db, 2), (db, 3)],
        [(ra, 0), (ra, 1), (db, 0), (db, 1), (db, 2), (db, 3)],
        [(ra, 0), (ra, 1), (ra, 2), (ra, 3), (db, 0), (db, 1), (db, 2), (db, 3)],
        [(db, 0), (db, 1), (db, 2), (db, 3), (ra, 3)],
    ]
    rng = random.Random(seed)
    seen, specs = set(), []
    for spec in hand:
        seen.add(tuple(spec))
        specs.append(spec)
    while len(specs) < len(hand) + n_random:
        L = rng.randint(2, depth)
        spec = tuple(rng.choice(layers_all) for _ in range(L))
        if spec not in seen:
            seen.add(spec)
            specs.append(list(spec))
    results = []
    for spec in specs:
        path = mk(spec)
        sources.apply(path.to_recipe(), live)
        results.append((" ".join(f"{tag[m]}{i}" for m, i in spec), spec, score(live)["target"]))
    best = max(results, key=lambda x: x[2])
    hand_scores = {name: s for name, _, s in results[: len(hand)]}
    log(f"  paths ({len(results)}: {len(hand)} hand + {n_random} random): best target {best[2]:.3f} at {best[0]}")
    log("  hand paths: " + ", ".join(f"{k}={v:.3f}" for k, v in hand_scores.items()))
    top = sorted(results, key=lambda x: -x[2])[:5]
    log("  top paths: " + ", ".join(f"{n}={s:.3f}" for n, _, s in top))
    return best, hand_scores, mk(best[1])


def lm_eval_final(models: dict[str, object], include_path: Path, log):
    from workers.zoo.evaluate import lm_eval_scores, task_manager_for

    tok = build_tokenizer()
    tm = task_manager_for(include_path)
    out = {}
    for name, model in models.items():
        s = lm_eval_scores(model, tok, list(TASKS.values()), include_path, task_manager=tm)
        out[name] = s
        log(f"  test (lm-eval, n=150): {name:<14} " + "  ".join(f"{k}={v:.3f}" for k, v in s.items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--designs", default="split,dense")
    ap.add_argument("--out", default=None, help="cache dir for the trained pairs (default: a temp dir)")
    ap.add_argument("--paths", type=int, default=300, help="random paths per design")
    ap.add_argument("--n", type=int, default=64, help="validation examples per task while searching")
    ap.add_argument("--scale", type=float, default=1.0, help="training-step multiplier")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    zoo = Zoo(default_zoo_dir())
    if not (zoo.root / "ZOO_COMPLETE").is_file():
        raise SystemExit(f"{zoo.root}: zoo v1 is not built (make demo builds it)")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="dfs-zoo-study-"))
    include = zoo.root / "tasks"
    score = Scorer(args.n)
    report = {}

    def log(msg):
        print(msg, flush=True)

    for design in args.designs.split(","):
        t0 = time.time()
        log(f"== design {design} (out {out / design})")
        pair = build_pair(design, zoo.base, out, args.scale, log)
        parents = {k: score(load(p), ("target", "arith", "cipher")) for k, p in pair.items()}
        for k, s in parents.items():
            log(f"  parent {k:<7} val: " + "  ".join(f"{t}={v:.3f}" for t, v in s.items()))
        best_global, best_lw = ps_search(zoo.base, pair, score, log)
        best_path, hand, path = path_search(pair, args.paths, score, log)
        # Final numbers on the test split through lm-eval: parents, both best PS merges and the
        # best path exported to disk by the product's writer and loaded back.
        from workers.data_flow import write_path_model

        base, d = state(zoo.base), state(pair["adder"])
        rs = reader_states(pair)
        models = {k: load(p) for k, p in pair.items()}
        for label, (kind, w, _) in (("ps_global", best_global), ("ps_layerwise", best_lw)):
            m = load(zoo.base)
            r = rs[w["align"]]
            if kind == "global":
                m.load_state_dict(ta_state(base, r, d, lambda n, w=w: (w["wR"], w["wD"])), strict=False)
            else:
                combo, owd = w["layers(wR,wD)"], w["outside_wD"]
                m.load_state_dict(ta_state(base, r, d, lambda n, owd=owd, combo=combo: (1.0, owd) if layer_index(n) is None
                                           else combo[layer_index(n)]), strict=False)
            models[label] = m
        exported = write_path_model(path, out / design / "best_path", overwrite=True)
        models["best_path"] = load(exported)
        test = lm_eval_final(models, include, log)
        report[design] = {
            "parents_val": parents,
            "ps_global_val": {"weights": best_global[1], "target": best_global[2]},
            "ps_layerwise_val": {"weights": [list(x) for x in best_lw[1]["layers(wR,wD)"]],
                                 "outside_wD": best_lw[1]["outside_wD"], "target": best_lw[2]},
            "best_path_val": {"path": best_path[0], "target": best_path[2]},
            "hand_paths_val": hand,
            "test_lm_eval": test,
            "seconds": round(time.time() - t0, 1),
        }
        (out / "study.json").write_text(json.dumps(report, indent=2))
        log(f"  ({time.time() - t0:.0f}s)")
    log(f"report: {out / 'study.json'}")


if __name__ == "__main__":
    main()
