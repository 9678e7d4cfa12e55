"""Which CPU a test run has, and which kernels OpenVINO picks on it: the context of a failure.

Model outputs move in their last digits with the instruction set (AVX2, AVX-512, VNNI, AMX), so the
CI log starts with `cpu_line()` (`python3 tests/machine.py`, standard library only) and pytest's
header repeats it. `openvino_conv_kernel()` compiles one small convolution and names the oneDNN
primitive OpenVINO chose (e.g. `jit_avx2_f32`, `brgconv_avx512_core_f32`), which shows whether
`ONEDNN_MAX_CPU_ISA` took effect.
"""
from __future__ import annotations

import os
from pathlib import Path

FEATURES = (("AVX2", ("avx2",)), ("AVX-512", ("avx512f",)),
            ("VNNI", ("avx512_vnni", "avx_vnni")), ("AMX", ("amx_tile",)))


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """The first CPU's model name and feature flags (`/proc/cpuinfo`; unknown and none elsewhere)."""
    model, flags = "unknown CPU", set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return model, flags


def cpu_line(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """One line: CPU model, core count and the instruction sets that change model arithmetic."""
    model, flags = cpu_info(cpuinfo)
    present = ", ".join(f"{name} {'yes' if flags & set(names) else 'no'}" for name, names in FEATURES)
    return f"machine: {model}; {os.cpu_count()} cores; {present}"


def openvino_conv_kernel() -> str:
    """The oneDNN primitive OpenVINO's CPU plugin runs a 3x3 convolution with, in this process."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([1, 16, 32, 32], np.float32, name="image")
    weights = ops.constant(np.ones((16, 16, 3, 3), np.float32))
    conv = ops.convolution(image, weights, [1, 1], [1, 1], [1, 1], [1, 1])
    compiled = ov.Core().compile_model(ov.Model([conv], [image]), "CPU", {"INFERENCE_NUM_THREADS": 1})
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) == "Convolution":
            return str(info["primitiveType"].astype(str))
    return "no convolution in the runtime model"


if __name__ == "__main__":
    print(cpu_line())
