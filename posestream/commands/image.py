"""`posestream image PATH...`: pose estimation on still images, AlphaPose JSON and rendered copies."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from posestream.commands.common import add_config_args, config_from_args
from posestream.stream.core.errors import InputError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("image", help="estimate poses on images or folders of images")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    parser.add_argument("--out", type=Path, default=Path("alphapose-results.json"),
                        help="AlphaPose-format JSON to write (default: %(default)s)")
    parser.add_argument("--render", type=Path, metavar="OUTDIR", help="also write annotated images here")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from posestream.stream.image_inference import expand_paths, infer_images
    from posestream.stream.core.keypoints import get_format
    from posestream.stream.render import draw_poses
    import cv2

    config = config_from_args(args)
    files = expand_paths(args.paths)  # fail on a bad path before loading the model
    if args.render:
        args.render.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    persons = 0
    for index, (path, image, result) in enumerate(infer_images(files, config), start=1):
        entries.extend(result.to_alphapose(path.name))
        persons += len(result.poses)
        if args.render:
            drawn = draw_poses(image, result.poses, get_format(result.poses.format))
            target = args.render / path.name
            if not cv2.imwrite(str(target), drawn):
                raise InputError(f"could not write {target}")
        log.info("[%d/%d] %s: %d persons", index, len(files), path.name, len(result.poses))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(entries), encoding="utf-8")
    print(f"{len(files)} images, {persons} persons -> {args.out}"
          + (f", rendered to {args.render}" if args.render else ""))
    return 0
