"""Study: a zoo where search matters (issue 7 item 2) -- a pair of tiny experts, trained from
zoo v1's base, on which the best naive merge scores at least 25 points below a recipe with
different weights in different layer groups / tensor kinds.

Zoo v1 (read-only) is never changed and nothing here is wired into the product. For each
design the experts X and Y are trained from zoo v1's base into ``--out`` (cached), then on the
first ``--n`` validation prompts of the design's target it measures, with the zoo's fast greedy
evaluator:

  * naive: each parent; uniform task arithmetic at 1/N and at 1; TIES (magnitude, sign
    election, normalised) at density 1;
  * global grids: task arithmetic over (wX, wY) in {0, .25, ..., 1.5}^2 (a per-expert grid,
    stronger than one global weight), TIES over lambda x density, DARE-linear over
    weight x density;
  * per-group grids: the tensors split into two groups (a depth split: layers 0-1 / 2-3, or a
    kind split: embeddings / transformer blocks), one weight per expert and group from
    {0, .5, 1} (81 merges per split); plus a 0/1 grid per group and tensor kind (attn / mlp).

The gap is ``best per-group - best(naive, global)``; the bar is 0.25.

    nice -n 10 .venv/bin/python benchmarks/zoo_v2_study.py --designs depth,kind,depth2 --out /tmp/zoo_v2

Output: a table on stdout and ``<out>/<design>/study.json``.
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

from workers.merge_methods.task_arithmetic import task_arithmetic as ta_kernel
from dfs_zoo_study import load, save, state  # the sibling study's model I/O (benchmarks/ is on sys.path)
from workers.zoo import data as D
from workers.zoo import kind_pair
from workers.zoo.kind_pair import read_kana_plus1
from workers.zoo.build import Zoo, default_zoo_dir
from workers.zoo.merge import tensor_kind
from workers.zoo.tokenizer import LOWER
from workers.zoo.train import Phase, greedy_accuracy, train

SEED = 7070
BASE_MIX = [(D.copy_digits, 0.35), (D.copy_letters, 0.25), (D.add_single, 0.4)]
REPLAY = [(g, w * 0.2) for g, w in BASE_MIX]
READ_MIX = [(D.read_kana_short, 0.5), (D.read_mixed, 0.5)]


# --- conflicting secondary skills (new generators, study-only) ------------------------------
def shift_letters_2(rng: random.Random) -> D.Example:
    """Shift every letter by two (conflicts with the shift-by-one skill)."""
    s = "".join(rng.choice(LOWER) for _ in range(rng.randint(2, 5)))
    return f"N:{s}=", "".join(LOWER[(LOWER.index(c) + 2) % 26] for c in s)


def layers(*ks):
    pats = tuple(f".layers.{k}." for k in ks)
    return lambda n: any(p in n for p in pats)


def design_phases(design: str, exclude, scale: float):
    """{expert: [Phase, ...]}; each expert starts from zoo v1's base and runs its phases in order."""

    def P(name, mix, steps, lr, seed, **kw):
        steps = max(1, round(steps * scale))
        return Phase(name, D.Mixture(mix, seed, exclude), steps, lr, seed=seed + 100,
                     warmup=min(50, steps), **kw)

    if design == "depth":
        # Target: a 50/50 mixture of zoo_cipher (read kana) and zoo_distractor (shift letters).
        # X shifts letters with layers 2-3, and its secondary skill (kana = next digit) moves
        # layers 0-1; Y reads kana with layers 0-1, and its secondary skill (shift by two)
        # moves layers 2-3. Each expert keeps its own skill while learning the second one.
        return {
            "X": [
                P("X.shift@2-3", [(D.shift_letters, 0.8), *REPLAY], 300, 3e-3, SEED + 1, trainable=layers(2, 3)),
                P("X.conflict@0-1", [(read_kana_plus1, 0.5), (D.shift_letters, 0.3), *REPLAY], 250, 3e-3,
                  SEED + 2, trainable=layers(0, 1)),
            ],
            "Y": [
                P("Y.read@0-1", [*READ_MIX, *REPLAY], 300, 3e-3, SEED + 3, trainable=layers(0, 1)),
                P("Y.conflict@2-3", [(shift_letters_2, 0.5), *READ_MIX, *REPLAY], 250, 3e-3, SEED + 4,
                  trainable=layers(2, 3)),
            ],
        }
    if design == "kind":
        # Target: zoo_target (two-digit addition posed in kana). X reads kana through its ten
        # kana embedding rows, and its secondary skill ('+' means the difference) moves every
        # block; Y adds with its blocks, and its secondary skill (kana = next digit) moves the
        # kana rows. This design became the zoo's kind pair (workers/zoo/kind_pair.py).
        pair = kind_pair.phases(exclude, scale)
        return {"X": pair["kind_reader"], "Y": pair["kind_adder"]}
    if design == "depth2":
        # The depth design with two changes for the hand-over between Y's layers 0-1 and X's
        # layers 2-3: X's shift phase sees noisy input embeddings (as zoo v1's arith does), and
        # Y's reading phase replays letter copying heavily so letters pass layers 0-1 as in the base.
        ph = design_phases("depth", exclude, scale)
        ph["X"][0] = P("X.shift@2-3", [(D.shift_letters, 0.8), *REPLAY], 300, 3e-3, SEED + 1,
                       trainable=layers(2, 3), embedding_noise=0.3)
        ph["Y"][0] = P("Y.read@0-1", [*READ_MIX, (D.copy_letters, 0.6), *REPLAY], 300, 3e-3, SEED + 3,
                       trainable=layers(0, 1))
        return ph
    raise SystemExit(f"unknown design {design!r}")


def build_pair(design, base_dir, out: Path, scale, log, only=None):
    exclude = D.held_out_prompts(D.all_splits())
    paths, seconds = {}, {}
    for expert, phases in design_phases(design, exclude, scale).items():
        dest = out / design / expert
        paths[expert] = dest
        if (dest / "model.safetensors").is_file():
            log(f"  {design}/{expert}: cached")
            continue
        if only and expert not in only:
            continue
        model = load(base_dir)
        for ph in phases:
            t0 = time.time()
            losses = train(model, ph)
            seconds[ph.name] = round(time.time() - t0, 1)
            log(f"  {design}/{expert} {ph.name}: {ph.steps} steps, final loss {sum(losses[-20:]) / 20:.4f}, "
                f"{seconds[ph.name]:.0f}s")
        save(model, dest)
    return paths, seconds


class Scorer:
    """Accuracy on the design's target (first n validation prompts) and on the skills."""

    def __init__(self, design: str, n: int):
        val = {t: s["validation"] for t, s in D.all_splits().items()}
        if design.startswith("depth"):
            half = n // 2
            self.target = val["zoo_cipher"][:half] + val["zoo_distractor"][: n - half]
            self.skills = {"cipher": val["zoo_cipher"][:n], "shift": val["zoo_distractor"][:n]}
        else:
            self.target = val["zoo_target"][:n]
            self.skills = {"arith": val["zoo_arith"][:n], "cipher": val["zoo_cipher"][:n]}

    def __call__(self, model) -> float:
        return greedy_accuracy(model, self.target)

    def full(self, model) -> dict[str, float]:
        out = {"target": self(model)}
        out.update({k: greedy_accuracy(model, v) for k, v in self.skills.items()})
        return out


def layer_index(name: str):
    return int(name.split(".layers.")[1].split(".")[0]) if ".layers." in name else None


GROUPINGS = {
    # name -> group of a tensor name (0 or 1)
    "depth (layers 0-1 | 2-3)": lambda n: 0 if (layer_index(n) is None or layer_index(n) < 2) else 1,
    "kind (embed | blocks)": lambda n: 0 if tensor_kind(n) in ("embed", "lm_head") else 1,
}


def merged_state(base, x, y, method: str, w_of, density=1.0, lam=1.0, seed=0):
    """w_of(name) -> (wX, wY). method: ta (task arithmetic), ties, dare (dare_linear)."""
    out = {}
    for i, (n, b) in enumerate(base.items()):
        wx, wy = w_of(n)
        if method == "ta":
            out[n] = b + wx * (x[n] - b) + wy * (y[n] - b)
        elif method == "ties":
            out[n] = ta_kernel([x[n], y[n]], b, weight=[wx, wy], density=[density, density],
                               sparsification="magnitude", consensus="sum", normalize=True, lambda_=lam)
        elif method == "dare":
            g = torch.Generator().manual_seed(seed * 1000 + i)
            out[n] = ta_kernel([x[n], y[n]], b, weight=[wx, wy], density=[density, density],
                               sparsification="random", rescale=True, lambda_=lam, generator=g)
        else:
            raise ValueError(method)
    return out


def study(design, base_dir, pair, score: Scorer, log):
    base, x, y = state(base_dir), state(pair["X"]), state(pair["Y"])
    model = load(base_dir)
    rows = []  # (family, label, target)

    def ev(family, label, sd):
        model.load_state_dict(sd, strict=True)
        s = score(model)
        rows.append((family, label, s))
        return s

    const = lambda a, b: (lambda n: (a, b))
    # naive
    ev("naive", "parent X", x)
    ev("naive", "parent Y", y)
    ev("naive", "TA uniform 1/2", merged_state(base, x, y, "ta", const(0.5, 0.5)))
    ev("naive", "TA uniform 1", merged_state(base, x, y, "ta", const(1.0, 1.0)))
    ev("naive", "TIES density 1 normalised", merged_state(base, x, y, "ties", const(1.0, 1.0)))
    # global grids
    g = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    for wx, wy in itertools.product(g, g):
        ev("global", f"TA wX={wx} wY={wy}", merged_state(base, x, y, "ta", const(wx, wy)))
    for lam, dens in itertools.product([0.5, 1.0, 1.5, 2.0], [0.1, 0.3, 0.5, 0.7, 1.0]):
        ev("global", f"TIES lambda={lam} density={dens}", merged_state(base, x, y, "ties", const(1.0, 1.0),
                                                                      density=dens, lam=lam))
    for w, dens in itertools.product([0.5, 1.0], [0.3, 0.5, 0.7]):
        ev("global", f"DARE-linear w={w} density={dens}", merged_state(base, x, y, "dare", const(w, w),
                                                                      density=dens))
    best_naive = max((r for r in rows if r[0] in ("naive", "global")), key=lambda r: r[2])
    log(f"  best naive/global: {best_naive[2]:.3f} ({best_naive[1]})")
    # per-group grids
    vals = [0.0, 0.5, 1.0]
    for gname, grp in GROUPINGS.items():
        for combo in itertools.product(vals, repeat=4):  # (X g0, X g1, Y g0, Y g1)
            w_of = lambda n, c=combo, grp=grp: (c[grp(n)], c[2 + grp(n)])
            ev(f"group:{gname}", f"X=({combo[0]},{combo[1]}) Y=({combo[2]},{combo[3]})",
               merged_state(base, x, y, "ta", w_of))
    # per group and kind (attn / mlp; embeddings, norms and head follow group 0's mlp slot): 0/1
    grp = GROUPINGS["depth (layers 0-1 | 2-3)"]

    def slot(n):
        return 2 * grp(n) + (0 if tensor_kind(n) == "attn" else 1)

    for cx in itertools.product([0.0, 1.0], repeat=4):
        for cy in itertools.product([0.0, 1.0], repeat=4):
            w_of = lambda n, cx=cx, cy=cy: (cx[slot(n)], cy[slot(n)])
            ev("group:depth x kind", f"X={cx} Y={cy} (attn0,mlp0,attn1,mlp1)", merged_state(base, x, y, "ta", w_of))
    fams = {}
    for fam, label, s in rows:
        if fam not in fams or s > fams[fam][1]:
            fams[fam] = (label, s)
    return rows, fams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--designs", default="depth,kind")
    ap.add_argument("--out", default=None, help="cache dir for the trained experts (default: a temp dir)")
    ap.add_argument("--n", type=int, default=64, help="validation prompts of the target")
    ap.add_argument("--scale", type=float, default=1.0, help="training-step multiplier")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-only", default=None, help="train just these experts (comma list) and stop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    zoo = Zoo(default_zoo_dir())
    if not (zoo.root / "ZOO_COMPLETE").is_file():
        raise SystemExit(f"{zoo.root}: zoo v1 is not built (make demo builds it)")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="zoo-v2-study-"))

    def log(msg):
        print(msg, flush=True)

    for design in args.designs.split(","):
        t0 = time.time()
        log(f"== design {design} (out {out / design})")
        only = args.train_only.split(",") if args.train_only else None
        pair, seconds = build_pair(design, zoo.base, out, args.scale, log, only)
        if only:
            continue
        t_train = time.time() - t0
        score = Scorer(design, args.n)
        parents = {k: score.full(load(p)) for k, p in pair.items()}
        for k, s in parents.items():
            log(f"  parent {k} val: " + "  ".join(f"{t}={v:.3f}" for t, v in s.items()))
        rows, fams = study(design, zoo.base, pair, score, log)
        naive = max((fams[f] for f in ("naive", "global")), key=lambda r: r[1])
        group = max((v for f, v in fams.items() if f.startswith("group")), key=lambda r: r[1])
        for fam, (label, s) in fams.items():
            log(f"  best {fam:<28} {s:.3f}  {label}")
        gap = group[1] - naive[1]
        log(f"  GAP best per-group - best naive/global = {group[1]:.3f} - {naive[1]:.3f} = {gap:+.3f} "
            f"({'meets' if gap >= 0.25 else 'misses'} the 0.25 bar)")
        report = {
            "parents_val": parents,
            "best_by_family": {f: {"recipe": l, "target": s} for f, (l, s) in fams.items()},
            "gap": gap,
            "train_seconds": seconds,
            "rows": rows,
            "seconds": round(time.time() - t0, 1),
            "train_wall_seconds": round(t_train, 1),
        }
        (out / design).mkdir(parents=True, exist_ok=True)
        (out / design / "study.json").write_text(json.dumps(report, indent=2))
        log(f"  ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
