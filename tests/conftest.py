"""Shared fixtures.

Fast tests use a seeded, untrained VGG16 at a small input size ("any weights"). Tests that need the real
ImageNet weights or the shared photo sets read LOOKALIKE_VGG16_WEIGHTS and LOOKALIKE_SAMPLE_DATA and skip,
saying why, when those are not set.
"""
from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.config import Settings
from backend.features import DescriptorSpec, FeatureExtractor
from backend.stores import open_store

# The checkout: subprocesses run here (`python -m benchmarks...`); `backend` and `indexer` are installed.
ROOT = Path(__file__).resolve().parent.parent

FAST_SPEC = DescriptorSpec(pooling="gem", image_size=64, square=False)
# One model cache for the session (converted models are built once, not per test), empty at its start.
MODEL_CACHE = Path(tempfile.mkdtemp(prefix="lookalike-test-models-"))
# float32 for the tests of everything else: their vectors compare with `fast_extractor`'s exactly.
# tests/test_precision.py runs every other precision, `auto` included.
FAST_ENV = {"LOOKALIKE_VGG16_WEIGHTS": "random", "LOOKALIKE_IMAGE_SIZE": "64", "LOOKALIKE_POOLING": "gem",
            "LOOKALIKE_SQUARE": "false", "LOOKALIKE_PRECISION": "float32", "LOOKALIKE_MODEL_CACHE": str(MODEL_CACHE),
            "LOOKALIKE_LABELS": "false"}   # the tests of content labels turn them on


def real_weights() -> str | None:
    """A path to the real ImageNet notop weights, or None."""
    value = os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "")
    if value and Path(value).is_file():
        return value
    cached = Path.home() / ".keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if value == "imagenet" and cached.is_file():
        return str(cached)
    return None


def sample_data() -> Path | None:
    value = os.environ.get("LOOKALIKE_SAMPLE_DATA", "")
    return Path(value) if value and Path(value).is_dir() else None


NO_WEIGHTS = ("real VGG16 weights not available: set LOOKALIKE_VGG16_WEIGHTS to "
              "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
NO_DATA = "shared photo sets not available: set LOOKALIKE_SAMPLE_DATA to the folder holding corel1k/ and ukbench-600/"


def require_real(dataset: str | None = None) -> tuple[str, Path | None]:
    weights = real_weights()
    if weights is None:
        pytest.skip(NO_WEIGHTS)
    if dataset is None:
        return weights, None
    data = sample_data()
    if data is None or not (data / dataset).is_dir():
        pytest.skip(NO_DATA)
    return weights, data / dataset


@pytest.fixture(scope="session")
def fast_extractor() -> FeatureExtractor:
    return FeatureExtractor("random", FAST_SPEC)


@pytest.fixture
def fast_settings(tmp_path) -> Settings:
    """Settings for a fresh embedded store in a temporary folder, with the fast descriptor."""
    return Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def fast_env(tmp_path) -> dict:
    """Environment for subprocesses (the indexer CLI, gunicorn) with the fast descriptor."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    return {**env, **FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}


def picture(seed: int, size=(96, 64), mode="RGB") -> Image.Image:
    """A deterministic picture: a few coloured blocks on noise, different for each seed."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        arr[y:y + size[1] // 2, x:x + size[0] // 2] = rng.integers(0, 255, 3)
    img = Image.fromarray(arr, "RGB")
    return img if mode == "RGB" else img.convert(mode)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Twelve small JPEG/PNG photos in two tagged sub-folders: cats/ and dogs/."""
    root = tmp_path / "images"
    for i in range(12):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        picture(i).save(folder / f"photo_{i}.{'jpg' if i % 3 else 'png'}")
    return root


class CorelIndex:
    """Corel-1k indexed once per test session by the real command line, with the default descriptor."""

    def __init__(self, root: Path, env: dict, first_run: dict):
        self.root, self.env, self.first_run = root, env, first_run
        self.settings = Settings.from_env(env)


@pytest.fixture(scope="session")
def corel_index(tmp_path_factory) -> CorelIndex:
    import json
    import subprocess

    weights, corel = require_real("corel1k")
    data_dir = tmp_path_factory.mktemp("corel-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update({"LOOKALIKE_VGG16_WEIGHTS": weights, "LOOKALIKE_DATA_DIR": str(data_dir)})
    result = subprocess.run([sys.executable, "-m", "indexer", "index", str(corel), "--tags-from-folders", "--json"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-2000:]
    return CorelIndex(corel, env, json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="session", autouse=True)
def _session_model_cache_removed():
    yield
    import shutil
    shutil.rmtree(MODEL_CACHE, ignore_errors=True)


# -- a real Elasticsearch ----------------------------------------------------------------------------

# The three-node cluster's fault detection: a stalled node (SIGSTOP) is dropped after about 6 s (2 checks
# 1 s apart, 2 s each) instead of about 30 s (3 checks of 10 s), so searches waiting on its shards fail over
# to the replicas within the fault tests' LOOKALIKE_ES_TIMEOUT (docs/elasticsearch.md, "Running a cluster").
CLUSTER_SETTINGS = {f"cluster.fault_detection.{check}.{name}": value
                    for check in ("follower_check", "leader_check")
                    for name, value in (("interval", "1s"), ("timeout", "2s"), ("retry_count", "2"))}


class ElasticNodes:
    """Real single-node clusters, started on first use and stopped at the end of the session (tests/es_node.py).
    ES_URL (8.x) and ES9_URL (9.x) point the tests at servers of your own instead. `cluster()` starts one
    three-node 8.x cluster for the fault tests (they kill its nodes, so it is always our own)."""

    def __init__(self):
        self._nodes: dict = {}
        self._failed: dict[str, str] = {}
        # path.repo of the nodes started here: snapshot repositories (backups) live under it
        self.repo_root = Path(tempfile.mkdtemp(prefix="lookalike-es-repo-"))
        self._cluster = None

    def url(self, major: str = "8") -> str:
        from tests import es_node

        given = os.environ.get("ES_URL" if major == "8" else f"ES{major}_URL", "")
        if given:
            return given
        if major in self._failed:
            pytest.fail(self._failed[major])
        if major not in self._nodes:
            try:
                self._nodes[major] = es_node.start(major, settings={"path.repo": str(self.repo_root)})
            except es_node.ToolMissing as exc:       # no Java or no Maven: a reason to skip, and only that
                pytest.skip(f"no real Elasticsearch {major}.x: {exc}")
            except es_node.NodeUnavailable as exc:
                self._failed[major] = f"Elasticsearch {major}.x did not start: {exc}"
                pytest.fail(self._failed[major])
        return self._nodes[major].url

    def node(self, major: str = "8"):
        """The node the suite started, to pause and resume it; skips when ES_URL names a server of one's own."""
        url = self.url(major)
        if major not in self._nodes:
            pytest.skip(f"Elasticsearch {major}.x at {url} is a server of your own: the tests do not pause it")
        return self._nodes[major]

    def repo(self, major: str = "8") -> Path:
        """A folder the node may keep snapshots in (under its path.repo). With ES_URL: ES_REPO names one."""
        given = os.environ.get("ES_URL" if major == "8" else f"ES{major}_URL", "")
        if given:
            folder = os.environ.get("ES_REPO", "")
            if not folder:
                pytest.skip("ES_URL is set without ES_REPO: a folder under that server's path.repo for snapshots")
        else:
            self.url(major)
            folder = str(self.repo_root)
        return Path(tempfile.mkdtemp(dir=folder))

    def start_private(self, major: str = "8", **options):
        """A node of the test's own (for faults: kill, pause, a tiny write queue); the caller stops it."""
        from tests import es_node

        try:
            return es_node.start(major, **options)
        except es_node.ToolMissing as exc:
            pytest.skip(f"no real Elasticsearch {major}.x: {exc}")

    def cluster(self):
        """The session's three-node 8.x cluster (tests/es_node.py Cluster), started on first use."""
        from tests import es_node

        if "cluster" in self._failed:
            pytest.fail(self._failed["cluster"])
        if self._cluster is None:
            try:
                self._cluster = es_node.start_cluster("8", nodes=3, settings=CLUSTER_SETTINGS)
            except es_node.ToolMissing as exc:
                pytest.skip(f"no real Elasticsearch 8.x: {exc}")
            except es_node.NodeUnavailable as exc:
                self._failed["cluster"] = f"the Elasticsearch 8.x cluster did not start: {exc}"
                pytest.fail(self._failed["cluster"])
        return self._cluster

    def stop(self) -> None:
        import shutil

        for node in self._nodes.values():
            node.stop()
        shutil.rmtree(self.repo_root, ignore_errors=True)
        if self._cluster is not None:
            self._cluster.close()


@pytest.fixture(scope="session")
def elastic_nodes():
    nodes = ElasticNodes()
    yield nodes
    nodes.stop()


@pytest.fixture
def es_url(elastic_nodes) -> str:
    """The URL of a real Elasticsearch 8.x (the docker-compose.yml version)."""
    return elastic_nodes.url("8")


def delete_indices(url: str, prefix: str) -> None:
    """Remove every index a test created under `prefix` (wildcard deletes are refused by default)."""
    from elasticsearch import Elasticsearch

    with Elasticsearch(url) as client:
        for name in client.indices.get(index=f"{prefix}*", expand_wildcards="all"):
            client.indices.delete(index=name)


@pytest.fixture(params=["embedded", "embedded-snapshots", "elastic", "elastic-9"])
def store(request, tmp_path, elastic_nodes):
    """An empty store of each backend: the contract tests run once per backend."""
    if request.param == "embedded-snapshots":
        # a new vector snapshot at (nearly) every change: the shared-file path taken as often as it can be
        from backend.stores.embedded import EmbeddedStore
        store = EmbeddedStore(tmp_path / "index.sqlite3", snapshot_min_rows=0)
        yield store
        store.close()
        return
    if request.param == "embedded":
        store = open_store(Settings(data_dir=tmp_path))
        yield store
        store.close()
        return
    url = elastic_nodes.url("9" if request.param == "elastic-9" else "8")
    alias = f"lookalike-test-{uuid.uuid4().hex[:8]}"
    store = open_store(Settings(store=url, es_index=alias))
    yield store
    store.close()
    delete_indices(url, alias)
