"""VGG16's conv5 in OpenVINO, for the bfloat16 and int8 paths; converted and quantised once per machine.

Keras stays the model definition and the weights loader: the Keras conv5 model is converted with
`openvino.convert_model`; int8 adds NNCF post-training quantisation, calibrated on the 16 sample photos
that `make run` indexes (`backend/sample_photos.py`: the photos of scikit-image's wheel, which every
installation can fetch from the package index), so two machines build the same int8 model; four of the
13 convolutions stay in float32 (FLOAT_CONVOLUTIONS).

Models are cached in `LOOKALIKE_MODEL_CACHE`, one folder per key (weights, descriptor, precision and the
versions of OpenVINO, NNCF, Keras and TensorFlow), holding `model.xml`, `model.bin` and `meta.json` (the
key and the files' sha256). A folder is built aside and renamed into place (atomic); one whose meta does
not match its key or whose files do not match their hashes is rebuilt, never used. A file lock makes
one process build while the others wait for it and then load what it built.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import sys
import uuid
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .filelock import FileLock, fsync

log = logging.getLogger(__name__)

FORMAT = 1   # bump when what is cached changes meaning
# How int8 is built (part of the cache key, so that a model built another way is rebuilt, never used):
# calibrated on the 16 sample photos, each one a batch of one at the descriptor's input size; activation
# ranges from their minimum and maximum (NNCF's mean of quantiles clipped too much: cosine to float32 fell
# to 0.985); the convolutions at FLOAT_CONVOLUTIONS (indices in data order, 0 the first) stay in float32,
# the four whose quantisation cost most, measured layer by layer (docs/benchmarks.md, "Precision"):
# block1_conv1 sees the raw pixels, whose 8-bit steps of 1.2 pixel values cost smooth, low-contrast photos
# (sky, sea, snow) most; the inputs of block2_conv1 and block5_conv3 (which feeds GeM) are where some
# photos overshoot the calibration's ranges and clip; block3_conv1 was the cheapest next gain. They hold
# 15.6% of the network's multiply-adds.
FLOAT_CONVOLUTIONS = (0, 2, 4, 12)
CALIBRATION = "sample-photos-16-minmax-float-conv0-2-4-12"
# int8: the layers left unquantised run in float32; float32: the classifier beside int8 VGG16 (classifier.py)
_OV_PRECISION = {"bfloat16": "bf16", "int8": "f32", "float32": "f32"}


def runtime_versions() -> dict:
    import openvino

    return {"openvino": openvino.__version__.split("-")[0]}


@contextlib.contextmanager
def _no_telemetry():
    """OpenVINO's converter and NNCF send usage statistics unless told not to; they both skip it in CI
    (`CI=true`), and NNCF also when `NNCF_CI` is set. Set only while converting and quantising."""
    saved = {name: os.environ.get(name) for name in ("CI", "NNCF_CI")}
    os.environ.update({"CI": "true", "NNCF_CI": "1"})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _valid(folder: Path, fields: dict) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return (meta.get("key") == fields
                and all(_sha256(folder / name) == digest for name, digest in meta["files"].items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def cached_model(cache: Path, name: str, fields: dict, build: Callable[[], object]) -> Path:
    """The folder of a valid cached model for `fields`, building it with `build()` (an ov.Model) under
    a lock when it is missing, stale or damaged."""
    import openvino

    folder = Path(cache) / f"{name}-{cache_key(fields)}"
    if _valid(folder, fields):
        return folder
    with FileLock(Path(cache) / f"{folder.name}.lock") as locked:
        if not locked:
            raise OSError(f"cannot write the model cache {cache} (LOOKALIKE_MODEL_CACHE)")
        if _valid(folder, fields):   # another process built it while this one waited
            return folder
        if folder.exists():
            log.warning("model cache entry %s is damaged or stale: rebuilding it", folder)
        model = build()
        tmp = Path(cache) / f".{folder.name}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            openvino.save_model(model, tmp / "model.xml", compress_to_fp16=False)
            files = {name: _sha256(tmp / name) for name in ("model.xml", "model.bin")}
            (tmp / "meta.json").write_text(json.dumps({"key": fields, "files": files}, indent=1))
            for path in tmp.iterdir():
                fsync(path)
            if folder.exists():
                trash = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.old")
                folder.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def convert(keras_model):
    """The Keras conv5 model as an OpenVINO model taking any batch of mean-centred BGR pictures."""
    import openvino

    with _no_telemetry(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # Keras: "the structure of inputs doesn't match"
        return openvino.convert_model(keras_model, input=[(-1, -1, -1, 3)])


def convolutions(model) -> list[str]:
    """The names of the model's convolutions, in the order the data meets them (VGG16's conv5: 13)."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]


def quantise(model, calibration: list[np.ndarray]):
    """int8 weights and activations (NNCF post-training quantisation) from calibration batches; the
    convolutions at FLOAT_CONVOLUTIONS (indices in data order) stay in float32."""
    with _no_telemetry():
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        nncf.set_log_level(logging.WARNING)
        if sys.stderr.isatty():
            print(f"lookalike: building the int8 model once for this machine: calibrating on "
                  f"{len(calibration)} sample photos", file=sys.stderr, flush=True)
        names = convolutions(model)
        kept = [names[i] for i in FLOAT_CONVOLUTIONS] if len(names) == 13 else []   # VGG16 conv5 only
        return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                             ignored_scope=nncf.IgnoredScope(names=kept) if kept else None,
                             advanced_parameters=AdvancedQuantizationParameters(
                                 activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))


def calibration_photos(cache: Path) -> list[Path]:
    """The sample photos, fetched into the cache once (from scikit-image's wheel), in a fixed order."""
    from .sample_photos import PHOTOS, fetch

    folder = Path(cache) / "calibration-photos"
    paths = [folder / group / name for group, names in PHOTOS.items() for name in names]
    if not all(p.is_file() for p in paths):
        with FileLock(Path(cache) / "calibration-photos.lock"):
            if not all(p.is_file() for p in paths):
                tmp = Path(cache) / f".calibration-photos.{uuid.uuid4().hex}"
                try:
                    fetch(tmp)
                except Exception as exc:  # noqa: BLE001 -- pip's error, no package index, no room
                    raise OSError(f"cannot fetch the int8 calibration photos (scikit-image's wheel from the "
                                  f"package index): {exc}") from None
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
    return paths


class CompiledMaps:
    """A compiled OpenVINO conv5: mean-centred BGR batch (N, H, W, 3) float32 -> maps (N, H/16, W/16, 512).

    Safe to call from several threads. Calls share a fixed pool of infer requests (the plugin's optimal
    number for the latency hint: one here), not one per thread: a request keeps state for the inputs it
    has run (measured: a warm-up over the 40 shapes in a second and a third thread added 8 and 7 MiB
    with one request per thread), which the warm-up, run in its own thread, could not build for the
    request threads. A call waits for a free request; the request runs on every core anyway."""

    def __init__(self, folder: Path, precision: str):
        import openvino

        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(folder / "model.xml"), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision]})
        # what the CPU plugin actually runs the unquantised layers in (bf16 falls back to f32 without it)
        self.executes = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        try:
            size = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except Exception:  # noqa: BLE001 -- an older plugin without the property: one request
            size = 1
        self.requests = max(1, min(size, 4))
        self._pool: queue.LifoQueue = queue.LifoQueue()
        for _ in range(self.requests):
            self._pool.put(self.compiled.create_infer_request())

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = self._pool.get()
        try:
            request.infer([batch])
            return request.get_output_tensor(0).data.copy()
        finally:
            self._pool.put(request)
