"""What of deploy/ can be checked without a cluster or a GPU: the manifests are valid and agree
with each other, the image runs as a non-root user, and the GPU smoke check's pieces work on
the CPU (its kernels check against the CPU itself, its search config passes pre-flight)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
sys.path.insert(0, str(DEPLOY))


def test_the_image_is_one_for_head_and_workers_and_runs_unprivileged():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM ${CUDA_IMAGE}" in text and "nvidia/cuda" in text
    assert "pip install '.[gpu,postgres]'" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] != "root"
    assert "HF_HUB_OFFLINE=1" in text and 'VOLUME ["/models"]' in text


def test_kuberay_manifests_and_the_launcher_config_are_well_formed():
    cluster = yaml.safe_load((DEPLOY / "kuberay" / "raycluster.yaml").read_text())
    job = yaml.safe_load((DEPLOY / "kuberay" / "rayjob.yaml").read_text())
    assert (cluster["kind"], job["kind"]) == ("RayCluster", "RayJob")
    assert job["spec"]["entrypoint"].startswith("evolve run ")
    images = {c["image"] for spec in (cluster["spec"], job["spec"]["rayClusterSpec"])
              for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert len(images) == 1  # the same image serves the head and the workers
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        for group in spec["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    launcher = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert any("ray start --head" in c for c in launcher["head_start_ray_commands"])


def test_compose_runs_postgresql_and_a_ray_head_sharing_one_store_url():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "ray-head"}
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    store = services["ray-head"]["environment"]["EVOLVE_STORE"]
    assert store.startswith("postgresql+psycopg://evolve:") and f":{password}@postgres/" in store


def test_the_gpu_smoke_script_parses_and_refuses_without_a_gpu():
    assert subprocess.run(["bash", "-n", str(DEPLOY / "gpu-smoke.sh")]).returncode == 0
    assert (DEPLOY / "gpu-smoke.sh").stat().st_mode & 0o111


@pytest.mark.slow
def test_gpu_smoke_pieces_work_here(tmp_path):
    import gpu_smoke

    from evolve.config import RunConfig
    from evolve.preflight import check_run
    from workers.zoo import build_zoo

    rows = gpu_smoke.check_kernels(build_zoo(progress=False), device="cpu")
    assert len(rows) == 10 and all(value == "ok" for _, value in rows), rows
    checked = check_run(RunConfig.model_validate(gpu_smoke.smoke_config()))
    assert checked.config.budget.max_evaluations == 20 and checked.scoring.settings["backend"] == "vllm"
