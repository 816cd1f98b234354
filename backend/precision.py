"""Which numeric precision runs VGG16 on this CPU: `LOOKALIKE_PRECISION` = auto | float32 | bfloat16 | int8.

float32 is TensorFlow (the Keras model as built). bfloat16 and int8 run the same network converted to
OpenVINO (`backend/openvino_model.py`). `auto` picks by the CPU's flags, and only a precision that passed
the accuracy gate (below):

- int8 where the CPU multiplies int8 natively (AVX-512 VNNI, AVX-VNNI, AMX-INT8);
- bfloat16 where it has native bfloat16 (AVX-512 BF16, AMX-BF16) but no int8 dot products, once bfloat16
  has passed the gate (not yet: it has not been measured on a CPU that runs it); float32 there until then;
- on a CPU with AVX2 but none of those, int8 against float32 is *measured* once per machine (kept in the
  model cache), and int8 is used only if at least `AVX2_INT8_MIN_GAIN` times faster;
- float32 otherwise.

A precision that passes the accuracy gate (docs/benchmarks.md, "Precision": every descriptor within
cosine 0.999 of float32's and mAP within 0.003 on Corel-1k and UKBench-600, with the ImageNet weights)
is listed in `INTERCHANGEABLE` and keeps the float32 descriptor id, so its vectors mix with float32 ones
in one store. int8, with the recipe of `backend/openvino_model.py`, passed on an AVX2-only Zen 3 (the CPU
where int8 is least exact: no VNNI, 16-bit intermediate sums). Any other precision keeps its own
descriptor id, and stores refuse to mix them.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16", "int8")
# Passed the accuracy gate on Corel-1k and UKBench-600 with the real weights (docs/benchmarks.md).
INTERCHANGEABLE = frozenset({"float32", "int8"})
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The flags a figure or a log line names, in this order, when the CPU has them.
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# On an AVX2-only CPU, int8 must beat float32 by this much in the start-up measurement to be chosen.
AVX2_INT8_MIN_GAIN = 1.1


@dataclass(frozen=True)
class Cpu:
    name: str
    flags: frozenset[str]

    @classmethod
    def this(cls, cpuinfo: Path = Path("/proc/cpuinfo")) -> "Cpu":
        """This machine's CPU, from /proc/cpuinfo (Linux); elsewhere a name and no flags (so float32)."""
        name = platform.processor() or platform.machine()
        flags: frozenset[str] = frozenset()
        fields: dict[str, str] = {}
        try:
            for line in cpuinfo.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if key == "" and flags:   # the first processor is enough
                    break
        except OSError:
            pass
        if "model name" in fields:   # virtual machines often hide the exact model: family and model say more
            name = fields["model name"]
            if "cpu family" in fields and "model" in fields:
                name += f" (family {fields['cpu family']} model {fields['model']})"
        return cls(name, flags)

    def has(self, names) -> bool:
        return any(flag in self.flags for flag in names)

    def describe(self) -> str:
        shown = [flag for flag in SHOWN_FLAGS if flag in self.flags]
        return f"{self.name} ({', '.join(shown) if shown else 'no AVX2'}; " + \
            ("AVX-512" if "avx512f" in self.flags else "no AVX-512") + ")"


@dataclass(frozen=True)
class Choice:
    """What runs: `precision` (float32, bfloat16, int8) and why (`reason`, one line for logs and stats).
    `measure` is True when `auto` still has to measure int8 against float32 on this CPU."""
    precision: str
    reason: str
    measure: bool = False


def choose(requested: str, cpu: Cpu, measured_gain: float | None = None) -> Choice:
    """The precision for `requested` on `cpu`. measured_gain: int8's speed over float32 as measured on
    this CPU (None: not measured yet)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested == "bfloat16" and not cpu.has(BF16_FLAGS):
        return Choice("bfloat16", "asked for; this CPU has no native bfloat16 (avx512_bf16, amx_bf16), so "
                                  "OpenVINO runs the network in float32: as slow as float32, not faster")
    if requested != "auto":
        return Choice(requested, "asked for (LOOKALIKE_PRECISION)")
    # auto takes only a precision that passed the accuracy gate: its vectors mix with float32's
    if cpu.has(INT8_FLAGS) and "int8" in INTERCHANGEABLE:
        return Choice("int8", "auto: the CPU has native int8 dot products "
                              f"({', '.join(f for f in INT8_FLAGS if f in cpu.flags)})")
    if cpu.has(BF16_FLAGS) and "bfloat16" in INTERCHANGEABLE:
        return Choice("bfloat16", "auto: the CPU has native bfloat16 "
                                  f"({', '.join(f for f in BF16_FLAGS if f in cpu.flags)})")
    native = [f for f in (*INT8_FLAGS, *BF16_FLAGS) if f in cpu.flags]
    if native:
        return Choice("float32", f"auto: the CPU runs lower precisions natively ({', '.join(native)}), but none "
                                 "has passed the accuracy gate, so float32 (LOOKALIKE_PRECISION=int8 or bfloat16 "
                                 "runs one, with its own descriptor id)")
    if "avx2" not in cpu.flags:
        return Choice("float32", "auto: no AVX2, VNNI or bfloat16 on this CPU")
    if "int8" not in INTERCHANGEABLE:
        return Choice("float32", "auto: AVX2 without VNNI; int8 has not passed the accuracy gate, so float32")
    if measured_gain is None:
        return Choice("float32", "auto: AVX2 without VNNI; int8 not measured yet on this CPU", measure=True)
    if measured_gain <= 0:
        return Choice("float32", "auto: AVX2 without VNNI; int8 could not be built on this machine (see the log)")
    if measured_gain >= AVX2_INT8_MIN_GAIN:
        return Choice("int8", f"auto: AVX2 without VNNI; int8 measured {measured_gain:.2f}x float32 on this CPU")
    return Choice("float32", f"auto: AVX2 without VNNI; int8 measured only {measured_gain:.2f}x float32 "
                             f"on this CPU (under {AVX2_INT8_MIN_GAIN}x)")
