"""Shared fixtures: small synthetic model families written on the fly (no hub, no downloads)."""

from pathlib import Path

import pytest

from workers.offline import go_offline

go_offline()


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> list[Path]:
    """A 2-layer Llama base and two fine-tune-like variants, single-shard float32."""
    from tests.fixtures.synthetic_models import LlamaShape, write_family

    root = tmp_path_factory.mktemp("family")
    return write_family(root, LlamaShape(layers=3), n_variants=2, seed=0)


@pytest.fixture(scope="session")
def sharded_family(tmp_path_factory) -> list[Path]:
    """The same architecture split over several shards, to exercise the sharded index."""
    from tests.fixtures.synthetic_models import LlamaShape, write_family

    root = tmp_path_factory.mktemp("sharded")
    return write_family(root, LlamaShape(layers=3), n_variants=2, seed=0, max_shard_bytes=40_000)


@pytest.fixture(scope="module", autouse=True)
def _no_ray_cluster_left_behind():
    """Each test module starts from no Ray connection: a module that joined or started a cluster
    leaves it when it ends, so the next one neither reuses it by accident nor sees it running."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
