"""`posestream engines build|list`: build TensorRT engines into the cache ahead of a run, list them."""
from __future__ import annotations

import argparse

from posestream.commands.common import add_config_args, config_from_args

PRECISION_CHOICES = ("fp16", "fp32", "int8")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("engines", help="build or list TensorRT engines")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="build (or verify) the TensorRT engine of a prepared model")
    build.add_argument("--model", required=True, help="prepared model name, e.g. yolo11n-pose")
    build.add_argument("--variant", help="ONNX variant of the model card (default: the most dynamic one)")
    build.add_argument("--precision", choices=PRECISION_CHOICES, help="default: tensorrt.precision")
    build.add_argument("--max-batch", type=int, help="largest batch the engine accepts "
                       "(default: tensorrt.max_batch)")
    build.add_argument("--device", default="cuda", help="CUDA device, e.g. cuda:1 (default: cuda)")
    build.add_argument("--calibration-images", metavar="DIR",
                       help="int8: folder of representative images (default: tensorrt.calibration_images)")
    build.add_argument("--rebuild", action="store_true", help="build even if a valid engine is cached")
    add_config_args(build)
    build.set_defaults(func=run_build)
    listing = actions.add_parser("list", help="list cached engines and what they were built for")
    add_config_args(listing)
    listing.set_defaults(func=run_list)


def pick_variant(files: dict[str, dict], wanted: str | None) -> str:
    """The named variant, else the one with the most dynamic axes (it serves every batch/size)."""
    from posestream.stream.core.errors import ModelError

    if wanted is not None:
        if wanted not in files:
            raise ModelError(f"no variant '{wanted}' (has: {', '.join(files)})")
        return wanted
    return max(files, key=lambda v: sum(d is None for d in files[v].get("input_shape", [])))


def run_build(args: argparse.Namespace) -> int:
    from posestream.engines.backends.base import tensorrt_available
    from posestream.engines.backends.engine_cache import BatchProfile
    from posestream.engines.models import load_card
    from posestream.stream.core.errors import BackendUnavailableError

    config = config_from_args(args, **{"tensorrt.precision": args.precision,
                                       "tensorrt.calibration_images": args.calibration_images})
    profile = None if args.max_batch is None else BatchProfile.of(config.tensorrt).with_max(args.max_batch)
    card, directory = load_card(config, args.model)
    variant = pick_variant(card.files, args.variant)
    reason = tensorrt_available()
    if reason is not None:
        raise BackendUnavailableError(f"cannot build a TensorRT engine here: {reason}")
    from posestream.engines.backends.tensorrt_engine import TensorRTEngine

    with TensorRTEngine.from_onnx(card.file(directory, variant), config, device=args.device, profile=profile,
                                  normalization=card.input, rebuild=args.rebuild) as engine:
        print(f"{card.name} {variant} {engine.precision} -> {engine.engine_path}")
        for name, (low, opt, high) in engine.profile.items():
            print(f"  input {name}: min {list(low)} opt {list(opt)} max {list(high)}")
        for spec in engine.outputs:
            print(f"  output {spec.name}: {list(spec.shape)} {spec.dtype}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from posestream.engines.backends.engine_cache import EngineCache, cache_root
    from posestream.stream.core.config import home_dir

    config = config_from_args(args)
    root = cache_root(config.tensorrt, home_dir(config))
    rows = list(EngineCache(root).entries())
    if not rows:
        print(f"no TensorRT engines in {root} (build one with `posestream engines build --model NAME`)")
        return 0
    for meta in rows:
        key = meta.get("key", {})
        state = "ok" if meta["present"] else "engine file missing"
        print(f"{meta.get('model', '?'):28s} {key.get('precision', '?'):5s} "
              f"{key.get('gpu_name', '?')} (sm {key.get('compute_capability', '?')}) "
              f"TensorRT {key.get('tensorrt_version', '?')} {meta.get('engine_bytes', 0) / 1e6:.1f} MB "
              f"{state}\n    {key.get('profile', '')}\n    {meta['path']}")
    return 0
