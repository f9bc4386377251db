"""The GPU smoke check behind `deploy/gpu-smoke.sh`: one GPU, under 6 minutes.

1. builds (or reuses) the embedded zoo;
2. checks every deterministic merge kernel on CUDA against the CPU result (allclose), on the
   zoo's real tensors, and the randomized ones (DARE, DELLA) on seeded CUDA against seeded CUDA;
3. starts one vLLM engine on CUDA with the zoo resident, and times its start and the
   in-place candidate switch;
4. runs a 20-evaluation CMA-ES zoo search on the vLLM backend, through the product's CLI.

Prints one table; exits non-zero if a check fails.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINE = {"enforce_eager": False, "gpu_memory_utilization": 0.5, "max_model_len": 512}


def check_kernels(zoo, device: str = "cuda") -> list[tuple[str, str]]:
    """Each merge kernel on ``device`` against the CPU, on real zoo tensors."""
    import torch

    from workers.checkpoint import Checkpoint
    from workers.merge_methods.registry import METHODS

    name = "model.layers.0.mlp.down_proj.weight"
    base, a, b = (Checkpoint.open(p) for p in (zoo.base, zoo.experts["arith"], zoo.experts["cipher"]))
    with base.reader() as rb, a.reader() as ra, b.reader() as rbb:
        tensors, base_t = [ra.read(name).float(), rbb.read(name).float()], rb.read(name).float()
    given = {"weight": [0.6, 0.4], "density": [0.5, 0.7], "t": 0.3}
    rows = []
    for method_name in ("linear", "task_arithmetic", "ties", "breadcrumbs", "slerp", "model_stock", "sce", "pcb"):
        method = METHODS[method_name]
        params = {k: v for k, v in given.items() if method.param(k) is not None}
        base_in = None if method.base == "unused" else base_t
        inputs = tensors[:1] if method_name == "slerp" else tensors  # slerp: the base and one model
        label = f"kernel {method_name}: {device} == cpu"
        try:
            cpu = method(inputs, base_in, **params)
            dev = method([t.to(device) for t in inputs], None if base_in is None else base_in.to(device), **params)
            ok = torch.allclose(cpu, dev.cpu(), rtol=1e-4, atol=1e-6)
            rows.append((label, "ok" if ok else f"FAIL max |d| {(cpu - dev.cpu()).abs().max():.2e}"))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            rows.append((label, f"FAIL {type(exc).__name__}: {exc}"))
    for method_name in ("dare_ties", "della"):
        runs = [METHODS[method_name]([t.to(device) for t in tensors], base_t.to(device), weight=[0.6, 0.4],
                                     density=[0.5, 0.7], generator=torch.Generator(device=device).manual_seed(7))
                for _ in range(2)]
        rows.append((f"kernel {method_name}: {device}, seeded twice",
                     "ok" if torch.equal(*runs) else "FAIL not reproducible"))
    return rows


def time_engine(zoo) -> list[tuple[str, str]]:
    from search_spaces.recipe import Recipe
    from workers.scoring import EvalSettings
    from workers.scoring.vllm_backend import VLLMBackend

    paths = [str(zoo.base), *(str(p) for p in zoo.experts.values())]
    settings = EvalSettings(backend="vllm", device="cuda", include_path=(str(zoo.tasks.include_path),),
                            engine_kwargs=ENGINE)
    start = time.perf_counter()
    backend = VLLMBackend(paths, settings)
    started = time.perf_counter() - start
    switches = []
    for i in range(10):
        w = 0.2 + 0.06 * i
        recipe = Recipe.from_dict({"merge_method": "task_arithmetic", "base_model": paths[0], "models": [
            {"model": paths[1], "parameters": {"weight": w}}, {"model": paths[2], "parameters": {"weight": 1 - w}}]})
        switches.append(backend.load(recipe).seconds)
    backend.close()
    return [("vLLM engine start (zoo resident on CUDA)", f"{started:.1f} s"),
            ("in-place switch, median of 10", f"{statistics.median(switches) * 1000:.0f} ms")]


def smoke_config() -> dict:
    """The demo search, 20 evaluations, one vLLM worker on one GPU."""
    import yaml

    config = yaml.safe_load((ROOT / "examples" / "zoo_demo.yaml").read_text())
    config["budget"] = {"max_evaluations": 20}
    config["evaluation"].update(backend="vllm", device="cuda", engine_kwargs=ENGINE)
    config["resources"] = {"workers": 1, "gpus_per_worker": 1}
    return config


def search(zoo) -> list[tuple[str, str]]:
    import yaml

    config = smoke_config()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "smoke.yaml"
        path.write_text(yaml.safe_dump(config))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "evolve.cli", "run", str(path), "--quiet",
                               "--store", f"sqlite:///{tmp}/smoke.db"], capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            return [("20-evaluation vLLM zoo search", f"FAIL exit {done.returncode}: {done.stderr.strip()[-300:]}")]
        runs = subprocess.run([sys.executable, "-m", "evolve.cli", "runs", "--format", "json",
                               "--store", f"sqlite:///{tmp}/smoke.db"], capture_output=True, text=True, cwd=ROOT)
        best = json.loads(runs.stdout)[0].get("best_validation")
    return [("20-evaluation vLLM zoo search", f"ok in {seconds:.0f} s, best validation fitness {best}")]


def main() -> int:
    import torch

    from workers.offline import go_offline
    from workers.zoo import build_zoo

    go_offline()
    if not torch.cuda.is_available():
        print("gpu-smoke: no CUDA device visible; this check needs one GPU")
        return 2
    t0 = time.perf_counter()
    zoo = build_zoo(progress=False)
    rows = [("GPU", torch.cuda.get_device_name(0)), ("zoo ready", f"{time.perf_counter() - t0:.0f} s")]
    rows += check_kernels(zoo) + time_engine(zoo) + search(zoo)
    rows.append(("total", f"{time.perf_counter() - t0:.0f} s"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 1 if any(v.startswith("FAIL") for _, v in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
