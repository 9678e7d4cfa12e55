"""Session fixtures shared by every test: the shared evaluation data and a prepared model cache.

`POSESTREAM_HOME` (set by scripts/test.sh after `posestream models prepare`) is reused when it
holds an intact default model; otherwise the model is prepared once into a session temp dir. The
variable is exported so CLI subprocesses and spawned stage processes use the same cache.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import machine
from posestream.stream.core.config import ENV_CONFIG, load_config, shared_dir
from posestream.stream.core.settings import Settings

ISA_KERNEL = {"SSE41": "sse4", "AVX2": "avx2"}  # what the capped convolution kernel's name contains


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("posestream", "CPU variations (docs/testing.md)")
    group.addoption("--isa", metavar="ISA", help="cap OpenVINO's oneDNN kernels at this instruction "
                    "set (ONEDNN_MAX_CPU_ISA: SSE41, AVX2, AVX512_CORE, ...)")
    group.addoption("--inference-threads", metavar="N", type=int,
                    help="every model session runs with N threads (detector, pose, engine)")
    parser.getgroup("posestream").addoption(
        "--soak", action="store_true",
        help="also run the tests marked soak (the pipeline for minutes; not part of every CI run)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests run only with --soak: they take minutes and the CI run must stay well under its
    30-minute limit (docs/testing.md)."""
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="a soak test: runs with --soak (docs/testing.md)")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)


def pytest_configure(config: pytest.Settings) -> None:
    """Set the variation's environment before any engine loads; subprocesses inherit it."""
    isa = config.getoption("--isa")
    if isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = isa.upper()
    threads = config.getoption("--inference-threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--inference-threads must be >= 1, got {threads}")
        folder = Path(tempfile.mkdtemp(prefix="posestream-variant-"))
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
        (folder / "threads.toml").write_text(
            f"[engine]\nintra_op_threads = {threads}\n[detector]\nthreads = {threads}\n"
            f"[pose]\nthreads = {threads}\n")
        os.environ[ENV_CONFIG] = str(folder / "threads.toml")


def pytest_report_header(config: pytest.Settings) -> list[str]:
    """The machine, and under a variation the kernel OpenVINO picks (the run stops when a
    requested ISA cap did not take effect: it would test nothing new)."""
    lines = [machine.cpu_line()]
    isa, threads = config.getoption("--isa"), config.getoption("--inference-threads")
    if isa or threads is not None:
        kernel = machine.openvino_conv_kernel()
        lines.append(f"variation: ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '')} "
                     f"inference threads={threads or 'configured'}; OpenVINO conv kernel: {kernel}")
        want = ISA_KERNEL.get((isa or "").upper())
        if want and want not in kernel or isa and "avx512" in kernel and "AVX512" not in isa.upper():
            raise pytest.UsageError(f"ONEDNN_MAX_CPU_ISA={isa} did not take effect: OpenVINO's "
                                    f"convolution kernel is {kernel}")
    return lines


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "data").is_dir() or not (path / "golden").is_dir():
        pytest.fail(f"shared evaluation data missing at {path} (set POSESTREAM_SHARED or paths.shared)")
    return path


@pytest.fixture(scope="session")
def prepared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from posestream.stream.demo_clip import calibration_frames as demo_frames
    from posestream.engines.models import prepare_default_model

    home = Path(os.environ.get("POSESTREAM_HOME") or tmp_path_factory.mktemp("posestream-home"))
    os.environ["POSESTREAM_HOME"] = str(home)
    prepare_default_model(load_config(), demo=demo_frames)  # as `posestream models prepare` does
    return home


@pytest.fixture
def config(prepared_home: Path) -> Settings:
    """Fresh defaults bound to the prepared cache (each test may change its copy)."""
    return load_config()
