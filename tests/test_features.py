"""The VGG16 extractor: shapes, normalisation, batching, descriptor ids, weight errors."""
from __future__ import annotations

import numpy as np
import pytest

from backend.config import ConfigError, Settings
from backend.features import DescriptorSpec, FeatureExtractor, WeightsError, rmac_regions, weights_tag

from .conftest import FAST_SPEC, picture, real_weights


def test_vectors_are_unit_float32_and_batching_does_not_change_them(fast_extractor):
    pictures = [picture(i, size) for i, size in enumerate([(96, 64), (64, 96), (96, 64), (80, 80)])]
    arrays = [fast_extractor.prepare(p) for p in pictures]
    batched = fast_extractor.embed(arrays, batch_size=3)
    assert batched.shape == (4, 512) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    one_by_one = np.stack([fast_extractor.embed_picture(p) for p in pictures])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)      # order kept across shape groups
    assert batched[0] @ batched[1] < 0.9999                           # different pictures differ


def test_input_shapes_keep_the_aspect_in_multiples_of_32():
    spec = DescriptorSpec("gem", 448, square=False)
    assert spec.input_shape(640, 480) == (320, 448)   # (height, width): 10.5 strides round to even
    assert spec.input_shape(384, 256) == (288, 448)
    assert spec.input_shape(256, 384) == (448, 288)
    assert spec.input_shape(10_000, 10) == (32, 448)  # never below one stride
    assert DescriptorSpec("avg", 224, square=True).input_shape(640, 480) == (224, 224)


def test_prepare_resizes_to_the_spec(fast_extractor):
    assert fast_extractor.prepare(picture(1, (300, 200))).shape == (32, 64, 3)


def test_descriptor_id_names_everything_that_changes_the_vector():
    ids = {DescriptorSpec(p, s, q).descriptor_id("imagenet")
           for p in ("avg", "gem") for s in (224, 448) for q in (True, False)}
    assert len(ids) == 8
    assert DescriptorSpec("gem", 448, False).descriptor_id("imagenet") == "vgg16-imagenet-conv5-gem1.5-ar448-512d"
    assert FeatureExtractor("random", FAST_SPEC).descriptor_id == "vgg16-random-conv5-gem1.5-ar64-512d"


@pytest.mark.parametrize("pooling", ["avg", "max", "rmac"])
def test_every_pooling_gives_unit_vectors(pooling):
    extractor = FeatureExtractor("random", DescriptorSpec(pooling, 64, False))
    vectors = extractor.embed([extractor.prepare(picture(i)) for i in range(2)])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_rmac_regions_cover_the_map():
    regions = rmac_regions(18, 28)
    assert all(x + side <= 28 and y + side <= 18 for x, y, side in regions)
    covered = np.zeros((18, 28), dtype=bool)
    for x, y, side in regions:
        covered[y:y + side, x:x + side] = True
    assert covered.all()


def test_missing_weights_file_says_what_to_set(tmp_path):
    with pytest.raises(WeightsError, match="LOOKALIKE_VGG16_WEIGHTS"):
        FeatureExtractor(str(tmp_path / "nope.h5"))


def test_corrupt_weights_file_is_a_weights_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"definitely not hdf5" * 100)
    with pytest.raises(WeightsError, match="LOOKALIKE_VGG16_WEIGHTS"):
        FeatureExtractor(str(bad))


def test_weights_tag_recognises_the_imagenet_file(tmp_path):
    other = tmp_path / "w.h5"
    other.write_bytes(b"x")
    assert weights_tag(str(other)).startswith("file")
    assert weights_tag("random") == "random"
    if real_weights():
        assert weights_tag(real_weights()) == "imagenet"


def test_settings_from_environment():
    s = Settings.from_env({"LOOKALIKE_DATA_DIR": "/tmp/x", "LOOKALIKE_SQUARE": "yes", "LOOKALIKE_IMAGE_SIZE": "224",
                           "LOOKALIKE_CORS_ORIGINS": "http://a.example, http://b.example"})
    assert (str(s.data_dir), s.square, s.image_size) == ("/tmp/x", True, 224)
    assert s.cors_origins == ("http://a.example", "http://b.example")
    assert Settings.from_env({}).store == "embedded" and Settings.from_env({}).vgg16_weights == "imagenet"
    for bad in ({"LOOKALIKE_POOLING": "median"}, {"LOOKALIKE_IMAGE_SIZE": "big"}, {"LOOKALIKE_SQUARE": "maybe"},
                {"LOOKALIKE_STORE": "ftp://x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.from_env(bad)


def test_shapes_lists_every_input_shape():
    for spec in (DescriptorSpec(), DescriptorSpec(image_size=64), DescriptorSpec(image_size=448),
                 DescriptorSpec(square=True)):
        shapes = set(spec.shapes())
        rng = np.random.default_rng(1)
        for width, height in rng.integers(1, 20_000, (5000, 2)):
            assert spec.input_shape(int(width), int(height)) in shapes
    assert len(DescriptorSpec().shapes()) == 40


def test_keras_is_imported_without_the_packages_the_product_never_uses():
    """Keras and TensorFlow import scikit-learn, SciPy and matplotlib when installed (here they are: nncf and the
    benchmarks need them), for wrappers and plots the product never calls; the product's import leaves them out
    (a third of TensorFlow's import time), and they still import normally afterwards."""
    import subprocess
    import sys

    from .conftest import ROOT

    code = ("import sys\nfrom backend.features import _import_tensorflow\n_import_tensorflow()\n"
            "print(sorted(m for m in ('matplotlib', 'scipy', 'sklearn') if m in sys.modules))\n"
            "import matplotlib, scipy.sparse, sklearn.base\nimport keras\nprint(keras.ops.sum(keras.ops.ones(3)))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0] == "[]"


def test_packages_are_left_out_only_for_the_thread_that_imports_keras():
    import importlib
    import sys
    import threading

    from backend.features import _left_out

    assert "wave" not in sys.modules
    with _left_out(frozenset({"wave"})):
        with pytest.raises(ImportError, match="left out"):
            importlib.import_module("wave")
        found = []
        other = threading.Thread(target=lambda: found.append(importlib.import_module("wave")))
        other.start()
        other.join()
        assert found and found[0].__name__ == "wave"
    assert importlib.import_module("wave") is found[0]
