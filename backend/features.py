"""VGG16 descriptors: one model per process, batched calls, pooled conv5, L2-normalised float32.

TensorFlow is imported only when an extractor is built, so the rest of the package stays light.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .precision import Cpu

POOLINGS = ("avg", "max", "gem", "rmac")
DIMS = 512
# GeM's p: 1.5 beats p=3 and average pooling on both Corel-1k and UKBench (docs/benchmarks.md).
GEM_P = 1.5
# Known files holding Keras' ImageNet "notop" weights (Keras' own md5; the sha256 of the file
# shipped in ../shared): recognised so that the descriptor id says "imagenet" for either.
_IMAGENET_MD5 = {"6d6bbae143d832006294945121d1f1fc"}
_IMAGENET_SHA256 = {"c12fc0c6a469306c9273e87e7d339ad7ae092e96092ee532e68f8cabacb91d72"}
# Pixels per model call, at most (see FeatureExtractor.embed).
MAX_CALL_PIXELS = 8 * 352 * 352
# VGG16's ImageNet means, BGR order (keras.applications.vgg16.preprocess_input, "caffe" mode).
_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)

log = logging.getLogger("lookalike.model")


class WeightsError(RuntimeError):
    """The VGG16 weights cannot be loaded; the message says what to set."""


@dataclass(frozen=True)
class DescriptorSpec:
    pooling: str = "gem"
    image_size: int = 336   # the side of the square, or the longer side when keeping the aspect
    square: bool = False

    def input_shape(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) fed to the network. Keeping the aspect, both sides are rounded to a multiple
        of 32 (VGG16's stride), so photos fall into a few shapes that batch together."""
        side = self.image_size
        if self.square:
            return side, side
        scale = side / max(width, height)

        def fit(n: int) -> int:
            return max(32, int(round(n * scale / 32)) * 32)
        return fit(height), fit(width)

    def shapes(self) -> list[tuple[int, int]]:
        """Every (height, width) that input_shape gives, whatever the picture: a few dozen at most."""
        if self.square:
            return [(self.image_size, self.image_size)]
        longest = {self.input_shape(n, n)[0] for n in range(1, 8193)}   # 320 and 352 at 336 (rounding)
        return sorted({pair for side in longest for short in range(32, side + 1, 32)
                       for pair in ((side, short), (short, side))})

    def descriptor_id(self, weights_tag: str, precision: str = "float32") -> str:
        """A precision that passed the accuracy gate keeps float32's id (its vectors mix with float32's);
        any other is named in the id, so that a store refuses to mix them."""
        from .precision import INTERCHANGEABLE

        shape = f"sq{self.image_size}" if self.square else f"ar{self.image_size}"
        pooling = f"gem{GEM_P:g}" if self.pooling == "gem" else self.pooling   # p changes the vector
        suffix = "" if precision in INTERCHANGEABLE else f"-{precision}"
        return f"vgg16-{weights_tag}-conv5-{pooling}-{shape}-{DIMS}d{suffix}"


def weights_tag(weights: str) -> str:
    """A short name for the weights, part of the descriptor id."""
    if weights in ("imagenet", "random"):
        return weights
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    if md5.hexdigest() in _IMAGENET_MD5 or sha.hexdigest() in _IMAGENET_SHA256:
        return "imagenet"
    return "file" + sha.hexdigest()[:10]


class FeatureExtractor:
    """Build once per process; `embed` a list of prepared pictures into an (N, 512) float32 matrix.

    precision: "float32" (TensorFlow, the default of this class), "bfloat16" or "int8" (OpenVINO), or
    "auto" (backend/precision.py; the product's default, through `from_settings`). model_cache: where
    converted models are kept (LOOKALIKE_MODEL_CACHE)."""

    def __init__(self, weights: str = "imagenet", spec: DescriptorSpec = DescriptorSpec(),
                 precision: str = "float32", model_cache: Path | None = None, cpu: Cpu | None = None):
        from .precision import BF16_FLAGS, Cpu, choose

        if spec.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {spec.pooling!r}; use one of {POOLINGS}")
        self.spec = spec
        if weights not in ("imagenet", "random") and not Path(weights).is_file():
            raise WeightsError(
                f"VGG16 weights file not found: {weights} -- set LOOKALIKE_VGG16_WEIGHTS to the path of "
                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, or to 'imagenet' to download them")
        self._weights, self._tag = weights, weights_tag(weights)
        if model_cache is None:
            from .config import Settings
            model_cache = Settings().model_cache
        self._cache = Path(model_cache)
        self.cpu = cpu or Cpu.this()
        self._keras = None
        self.warmed_up = False   # set once warm_up has run a call at every input shape
        choice = choose(precision, self.cpu)
        if choice.measure:
            choice = choose(precision, self.cpu, self._int8_gain())
        self.precision, self.precision_reason = choice.precision, choice.reason
        if precision == "bfloat16" and not self.cpu.has(BF16_FLAGS):
            log.warning("LOOKALIKE_PRECISION=bfloat16: %s", choice.reason)
        forward: _Pooled | None = None
        if self.precision != "float32":
            try:
                compiled = self._openvino(self.precision)
            except WeightsError:
                raise
            except Exception as exc:  # noqa: BLE001 -- no calibration photos, no room, a converter error: one line
                message = f"cannot build the {self.precision} model: {type(exc).__name__}: {str(exc)[:300]}"
                if precision != "auto":
                    raise WeightsError(message + " -- set LOOKALIKE_PRECISION=float32 to run without it") from None
                log.warning("%s; float32 is used", message)
                self.precision, self.precision_reason = "float32", f"auto: {message}"
            else:
                forward = _Pooled(lambda batch: compiled(_caffe(batch)), spec.pooling)
                self.runtime = f"OpenVINO {runtime_versions()['openvino']} (runs {compiled.executes})"
        if forward is None:   # float32, asked for or chosen
            forward = _Pooled(_tf_maps(self.model), spec.pooling)
            self.runtime = f"TensorFlow {_tf_version()}"
        self._forward = forward
        self.descriptor_id = spec.descriptor_id(self._tag, self.precision)

    @classmethod
    def from_settings(cls, settings) -> "FeatureExtractor":
        return cls(settings.vgg16_weights, DescriptorSpec(settings.pooling, settings.image_size, settings.square),
                   settings.precision, settings.model_cache)

    @property
    def model(self):
        """The Keras conv5 model (raw maps from mean-centred BGR input), built on first use: a worker
        that loads a cached bfloat16 or int8 model never builds it."""
        if self._keras is None:
            self._keras = _keras_conv5(self._weights)
        return self._keras

    def info(self) -> dict:
        """What runs, for the start-up log line, `stats` and /api/stats."""
        return {"precision": self.precision, "runtime": self.runtime, "reason": self.precision_reason,
                "cpu": self.cpu.describe()}

    def describe(self) -> str:
        return f"{self.precision} ({self.precision_reason}); {self.runtime} on {self.cpu.describe()}"

    def _openvino(self, precision: str):
        """The compiled OpenVINO model, converted (and for int8 quantised) on first use and cached."""
        from .openvino_model import CALIBRATION, FORMAT, CompiledMaps, cached_model, convert, quantise

        fields = {"format": FORMAT, "weights": self._tag, "descriptor": self.spec.descriptor_id(self._tag),
                  "precision": precision, **runtime_versions(), "keras": _keras_version(),
                  "tensorflow": _tf_version()}
        if precision == "int8":
            import nncf
            fields.update(nncf=nncf.__version__, calibration=CALIBRATION)

        def build():
            model = convert(self.model)
            if precision == "int8":
                model = quantise(model, [_caffe(a[np.newaxis]) for a in self._calibration_pictures()])
            return model
        return CompiledMaps(cached_model(self._cache, f"{self.spec.descriptor_id(self._tag)}-{precision}",
                                         fields, build), precision)

    def _calibration_pictures(self) -> list[np.ndarray]:
        from .imaging import Limits, decode, read_file
        from .openvino_model import calibration_photos

        limits = Limits()
        return [self.prepare(decode(read_file(p, limits), limits, str(p), draft_size=self.spec.image_size).image)
                for p in calibration_photos(self._cache)]

    def _int8_gain(self) -> float:
        """int8's speed over float32 on this CPU, measured once (3 interleaved rounds on 8 calibration
        photos, median) and kept in the model cache by CPU and descriptor."""
        from .filelock import FileLock

        path = _gain_path(self._cache, self.cpu, self._tag, self.spec)
        with FileLock(path.parent / "lock"):   # two workers measuring at once would slow each other
            gain = _read_gain(path)
            if gain is not None:
                return gain
            try:
                compiled = self._openvino("int8")
                int8 = _Pooled(lambda batch: compiled(_caffe(batch)), self.spec.pooling)
                pictures = self._calibration_pictures()[:8]
            except WeightsError:
                raise
            except Exception as exc:  # noqa: BLE001 -- kept as "not faster", so that each start does not try again
                log.warning("int8 cannot be built on this machine, float32 is used: %s: %s",
                            type(exc).__name__, str(exc)[:300])
                _write_json(path, {"int8_over_float32": 0.0, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                return 0.0
            float32 = _Pooled(_tf_maps(self.model), self.spec.pooling)
            seconds: dict[str, list[float]] = {"float32": [], "int8": []}
            for run in (float32, int8):
                [run(p[np.newaxis]) for p in pictures]   # warm-up: every shape
            for _ in range(3):
                for name, run in (("float32", float32), ("int8", int8)):
                    started = time.perf_counter()
                    [run(p[np.newaxis]) for p in pictures]
                    seconds[name].append(time.perf_counter() - started)
            gain = float(np.median(seconds["float32"]) / np.median(seconds["int8"]))
            _write_json(path, {"int8_over_float32": gain, "seconds": seconds, "cpu": self.cpu.describe()})
            return gain

    def prepare(self, picture: Image.Image) -> np.ndarray:
        """An RGB picture resized to the network's input shape, as uint8 (H, W, 3)."""
        height, width = self.spec.input_shape(*picture.size)
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(picture, dtype=np.uint8)

    def embed(self, arrays: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Descriptors for prepared pictures, in input order. Pictures of equal shape share model calls."""
        out = np.empty((len(arrays), DIMS), dtype=np.float32)
        by_shape: dict[tuple, list[int]] = {}
        for i, arr in enumerate(arrays):
            by_shape.setdefault(arr.shape, []).append(i)
        for shape, indices in by_shape.items():
            # A call's memory grows with its pixels (VGG16's first layers: 64 maps at full size), so large
            # pictures go fewer at a time: at most 8 at 352 x 352 (a 1.2 GiB peak, against 1.8 for 16).
            per_call = max(1, min(batch_size, MAX_CALL_PIXELS // (shape[0] * shape[1])))
            for start in range(0, len(indices), per_call):
                chunk = indices[start:start + per_call]
                out[chunk] = self._forward(np.stack([arrays[i] for i in chunk]))
        return out

    def warm_up(self) -> int:
        """One call at every input shape, now: the graph is traced and TensorFlow's per-shape state (about
        8 MiB each, 40 shapes at 336 px) is built before a server takes requests, so that its memory does
        not grow with the sizes of the pictures it meets later, and no first picture of a shape pays it.
        Returns the number of shapes; `warmed_up` is True from then on."""
        shapes = self.spec.shapes()
        for shape in shapes:
            self.embed([np.zeros((*shape, 3), dtype=np.uint8)])
        self.warmed_up = True
        return len(shapes)

    def embed_picture(self, picture: Image.Image) -> np.ndarray:
        return self.embed([self.prepare(picture)])[0]

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        """Raw conv5 maps (N, H/16, W/16, 512) of a batch of equal-shape prepared pictures; with
        `pool_maps`, the benchmarks derive every pooling from one model call."""
        return self._forward.maps(batch)


def runtime_versions() -> dict:
    from .openvino_model import runtime_versions as versions

    return versions()


def planned_precision(settings) -> dict:
    """The precision a model built with these settings would run, without building it (`stats`)."""
    from .precision import Cpu, choose

    cpu = Cpu.this()
    spec = DescriptorSpec(settings.pooling, settings.image_size, settings.square)
    gain = None
    weights = settings.vgg16_weights
    if settings.precision == "auto" and (weights in ("imagenet", "random") or Path(weights).is_file()):
        gain = _read_gain(_gain_path(settings.model_cache, cpu, weights_tag(weights), spec))
    choice = choose(settings.precision, cpu, gain)
    return {"precision": choice.precision, "reason": choice.reason, "cpu": cpu.describe()}


def _gain_path(cache: Path, cpu, tag: str, spec: DescriptorSpec) -> Path:
    from .openvino_model import CALIBRATION, cache_key

    # the int8 recipe is part of the key: a model that keeps other layers in float32 runs at another speed
    key = cache_key({"cpu": cpu.name, "flags": sorted(cpu.flags), "weights": tag,
                     "descriptor": spec.descriptor_id(tag), "calibration": CALIBRATION, **runtime_versions()})
    return Path(cache) / "measured" / f"int8-gain-{key}.json"


def _write_json(path: Path, value: dict) -> None:
    from .filelock import write_atomically

    write_atomically(path, json.dumps(value).encode())


def _read_gain(path: Path) -> float | None:
    try:
        return float(json.loads(path.read_text())["int8_over_float32"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# What TensorFlow prints at import before any log level applies (oneDNN is on: we turn it on below).
_IMPORT_NOTICES = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


@contextlib.contextmanager
def _import_notices_dropped():
    """File descriptor 2 held back during the block and written out after it, less TensorFlow's import
    notices: anything else (a warning, another thread's log line, an error) still reaches stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not any(notice in line for notice in _IMPORT_NOTICES)]
            sys.stderr.write("".join(kept))


# Optional packages Keras and TensorFlow import when they are installed, for parts the product never uses
# (Keras' scikit-learn wrappers and image-gallery plots, the legacy tf.keras' SciPy sparse input). scikit-learn
# comes with nncf, matplotlib and SciPy with many environments: together about 3 s of CPU at each process's
# start on a 2-core Zen 3, a fifth of a worker's start-up (docs/benchmarks.md, "Start-up: what Keras imports").
_UNUSED_BY_KERAS = frozenset({"matplotlib", "scipy", "sklearn"})


class _LeftOut(importlib.abc.MetaPathFinder):
    """Answers ImportError for `names` (top-level packages) in one thread: Keras and TensorFlow take each
    as absent (they import them inside try/except). Other threads, and later imports, find them as usual."""

    def __init__(self, names: frozenset[str]):
        self.names, self.thread = names, threading.get_ident()

    def find_spec(self, fullname, path=None, target=None):
        if threading.get_ident() == self.thread and fullname.partition(".")[0] in self.names:
            raise ImportError(f"{fullname} is left out while Keras is imported")
        return None


@contextlib.contextmanager
def _left_out(names: frozenset[str]):
    finder = _LeftOut(names - set(sys.modules))    # what is imported already stays what it is
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _import_tensorflow():
    # TensorFlow's C++ start-up notices (CPU features, ...) would drown the indexer's own lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN convolutions: about 1.3x faster here, same vectors; TF enables them by default only on CPUs
    # with AVX-512 VNNI/BF16 or AMX (read at TF's import, hence here).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    # The stores' native libraries first: TensorFlow bundles some of its own (load_native_libraries says which).
    from .stores import load_native_libraries
    load_native_libraries()
    with _import_notices_dropped(), _left_out(_UNUSED_BY_KERAS):
        import keras
        import tensorflow as tf
    return keras, tf


def _tf_version() -> str:
    return _import_tensorflow()[1].__version__


def _keras_version() -> str:
    return _import_tensorflow()[0].__version__


def _keras_conv5(weights: str):
    """Keras' VGG16 up to block5_conv3, with the given weights: the model definition of every path."""
    keras, _ = _import_tensorflow()
    try:
        if weights == "random":
            keras.utils.set_random_seed(20261121)  # the same untrained network in every process
            base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
        else:
            base = keras.applications.VGG16(weights=weights, include_top=False, input_shape=(None, None, 3))
    except Exception as exc:  # noqa: BLE001 -- Keras raises several types for a failed download or a bad file
        raise WeightsError(
            f"cannot load VGG16 weights '{weights}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}) "
            "-- set LOOKALIKE_VGG16_WEIGHTS to a local vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") from None
    return keras.Model(base.input, base.get_layer("block5_conv3").output)


def _caffe(batch: np.ndarray) -> np.ndarray:
    """Prepared RGB uint8 pictures as VGG16's input: float32 BGR, ImageNet means subtracted."""
    return batch[..., ::-1].astype(np.float32) - _BGR_MEAN


def _tf_maps(conv5):
    """conv5 maps of a prepared batch with TensorFlow. One graph for every input shape: a trace per
    shape would keep one more graph (and its memory) for each size of picture a server meets."""
    _, tf = _import_tensorflow()
    compiled = tf.function(lambda x: conv5(x, training=False),
                           input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    return lambda batch: compiled(tf.constant(_caffe(batch))).numpy()


@dataclass(frozen=True)
class _Pooled:
    """The descriptor function from a conv5 maps function: pooled, L2-normalised float32 (one pooling
    code for every runtime; eager, as it costs little beside the convolutions)."""
    maps: Callable[[np.ndarray], np.ndarray]
    pooling: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return pool_maps(self.maps(batch), self.pooling)



def pool_maps(fmap: np.ndarray, pooling: str) -> np.ndarray:
    """L2-normalised descriptors from raw conv5 maps, with the same pooling code as `embed`."""
    import tensorflow as tf

    return l2_normalise(_pool(tf.constant(fmap, dtype=tf.float32), pooling).numpy())


def _pool(fmap, pooling: str):
    import tensorflow as tf

    if pooling == "avg":
        return tf.reduce_mean(fmap, axis=[1, 2])
    if pooling == "max":
        return tf.reduce_max(fmap, axis=[1, 2])
    if pooling == "gem":
        return tf.pow(tf.reduce_mean(tf.pow(tf.maximum(fmap, 1e-6), GEM_P), axis=[1, 2]), 1.0 / GEM_P)
    return _rmac(fmap)


def _rmac(fmap, levels: int = 3):
    """R-MAC (Tolias et al. 2016): max-pool square regions at several scales, L2-normalise each, sum."""
    import tensorflow as tf

    height, width = int(fmap.shape[1]), int(fmap.shape[2])
    total = None
    for x0, y0, side in rmac_regions(height, width, levels):
        region = tf.reduce_max(fmap[:, y0:y0 + side, x0:x0 + side, :], axis=[1, 2])
        region = tf.math.l2_normalize(region, axis=1)
        total = region if total is None else total + region
    return total


def rmac_regions(height: int, width: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """Square regions (x, y, side) on an H x W map, about 40% overlap, as in the R-MAC paper."""
    short = min(height, width)
    regions = [(0, 0, short)] if height == width else []
    for level in range(1, levels + 1):
        side = max(1, int(2 * short / (level + 1)))
        steps_x = max(1, int(round((width - side) / side * 2.5)) + 1) if width > side else 1
        steps_y = max(1, int(round((height - side) / side * 2.5)) + 1) if height > side else 1
        steps_x, steps_y = max(steps_x, level), max(steps_y, level)
        for i in range(steps_x):
            for j in range(steps_y):
                x = 0 if steps_x == 1 else int(round(i * (width - side) / (steps_x - 1)))
                y = 0 if steps_y == 1 else int(round(j * (height - side) / (steps_y - 1)))
                regions.append((x, y, side))
    return sorted(set(regions))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
