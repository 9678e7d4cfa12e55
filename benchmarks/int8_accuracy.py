"""Where INT8 loses accuracy and what a recipe costs: INT8 models built with `[quantize]` variants,
compared with the FP32 model on images that are neither calibration nor evaluation data.

For every recipe (the configured default plus `--recipe NAME=KEY=VALUE,...`) the INT8 model is built
once into `--work` (a cache home per recipe, the FP32 ONNX files linked from the prepared home), then:

- **agreement**: the FP32 persons (score >= 0.25) on the validation images are the truth; each is
  matched to the INT8 person of the highest box IoU: the OKS of its keypoints (COCO sigmas, 0.53 x
  box area, FP32 keypoints with confidence > 0.5; persons with none left out), persons missed (no
  box of IoU >= 0.5, or OKS < 0.5), INT8 persons >= 0.25 with no FP32 box, and the mean |score
  difference| of matched persons;
- **sensitivity** (`--sensitivity [RECIPE]`, default: the configured recipe): that model's activation
  quantizers of one group of layers at a time widened to 16 bits (near float; the CPU then runs that part in float), the rest
  INT8: which part of the network the loss comes from;
- **exact arithmetic** (`--exact`): each recipe's model again with every FakeQuantize written out
  as float math (`exact_int8`), which OpenVINO's low-precision passes do not turn into INT8 kernels:
  the same quantized values computed exactly, without this CPU's INT8 arithmetic (on AVX2, u8 x s8
  pairs summed in 16 bits): what the quantization itself loses, apart from what the CPU adds;
- **build noise** (`--jitter N`): N copies of each recipe's model whose activation
  quantizer ranges and convolution biases are multiplied by 1 +- `--jitter-size` (default 1e-6):
  the float last digits by which two builds of one recipe on two CPUs differ (NNCF's statistics and
  bias correction run FP32 kernels, which sum in another order per instruction set); with `--eval`,
  how far the AP on the shared sets moves between builds that differ only in that;
- **CPU time** of one inference of each model at 1x3x384x640 on one thread (alternated rounds;
  CPU time stays comparable under load, wall time does not);
- **accuracy control** (`--accuracy-control MAX_DROP`): NNCF's accuracy-aware quantization of the
  configured recipe, its metric the agreement above (mean OKS - mean |score difference|, FP32 = 1)
  on the validation images: which layers it puts back in float, and what that model then agrees
  and costs;
- **eval** (`--eval`): COCO keypoint AP/AP50/AP75/AR and the mean OKS per annotated person on every
  annotated set in `../shared/data`, FP32 and each recipe (reported, never used to choose).

Validation images (`validation_images`): frames 420-780 of OpenCV's `vtest.avi` and its
`basketball1/2.png`, `messi5.jpg` (Debian's `opencv-doc`, fetched with `apt-get download` and cached
under `$POSESTREAM_HOME/downloads`), scikit-image's `camera.png` and matplotlib's `grace_hopper.jpg`
when installed. None is in the default calibration set (two photos, the demo clip and what is made
of them) or in an evaluation set.

    python -m posestream.benchmarks.int8_accuracy [--recipe NAME=KEY=VALUE,...] [--sensitivity [NAME]]
        [--accuracy-control MAX_DROP [--iterations N]] [--exact] [--jitter N [--jitter-size REL]] [--eval]
        [--work DIR] [--out int8.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posestream.benchmarks.report import emit
from posestream.engines.quantize import INT8_KEY
from posestream.stream.core.config import home_dir, load_config, parse_value, shared_dir
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import InputError, InputNotFoundError

log = logging.getLogger(__name__)

GT_SCORE = 0.25  # FP32 persons scoring at least this are the agreement's truth
SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
VALIDATION_FRAMES = range(420, 781, 40)  # vtest.avi frames (the default calibration takes frames < 400)
LATENCY_SHAPE = (1, 3, 384, 640)
# layer groups of the sensitivity study: (name, regex on the quantizer's name)
GROUPS = [("all activations", r".*"), ("backbone (model.0-10)", r"/model\.(\d|10)/"),
          ("neck (model.11-22)", r"/model\.(1[1-9]|2[0-2])/"), ("head (model.23)", r"/model\.23/"),
          ("head box branch (cv2)", r"/model\.23/cv2"), ("head score branch (cv3)", r"/model\.23/cv3"),
          ("head keypoint branch (cv4)", r"/model\.23/cv4"), ("attention (model.10)", r"/model\.10/"),
          ("first conv (model.0)", r"/model\.0/|^(?!.*/model\.)")] + [
          (f"model.{i}", rf"/model\.{i}/") for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 19, 22)]
# OpenVINO 2026.4 cannot compile the attention block's qkv conv with a float input when its weights
# are INT8 (ConvertWeightCompressedConv1x1ToMatmul): this quantizer always stays 8-bit.
KEEP_8BIT = "/model.10/cv1/act"


# -- data -----------------------------------------------------------------------------------------

def validation_images(config: Settings) -> list[tuple[str, np.ndarray]]:
    """(name, BGR image) of the validation set (see the module docstring)."""
    from posestream.engines.calibration import video_frames

    names = ["vtest.avi", "basketball1.png", "basketball2.png", "messi5.jpg"]
    clip, *photos = debian_files(config, "opencv-doc", [f"examples/data/{name}" for name in names])
    images = [(f"vtest.avi#{i}", frame) for i, frame in zip(VALIDATION_FRAMES, video_frames(clip, list(VALIDATION_FRAMES)))]
    images += [(path.name, _read(path)) for path in photos]
    for package, member in (("skimage", "data/camera.png"), ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")):
        path = _package_file(package, member)
        if path is not None:
            images.append((path.name, _read(path)))
    return images


def debian_files(config: Settings, package: str, members: list[str]) -> list[Path]:
    """Files of a Debian package (`members`: paths under `/usr/share/doc/<package>/`), fetched with
    `apt-get download` once and unpacked in one pass under `$POSESTREAM_HOME/downloads/debian`
    (benchmark data; needs Debian's apt-get and dpkg-deb)."""
    root = home_dir(config) / "downloads" / "debian" / package
    targets = [root / member for member in members]
    missing = [member for member, target in zip(members, targets) if not target.is_file()]
    if not missing:
        return targets
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise InputNotFoundError(f"{', '.join(missing)} come(s) from the Debian package {package}, "
                                     f"and {tool} is not available here")
    root.mkdir(parents=True, exist_ok=True)
    debs = sorted(root.glob(f"{package}_*.deb"))
    if not debs:
        log.info("fetching the Debian package %s (apt-get download) ...", package)
        result = subprocess.run(["apt-get", "download", package], cwd=root, capture_output=True, text=True)
        debs = sorted(root.glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise InputNotFoundError(f"apt-get download {package} failed: {' '.join(tail)}")
    inner = [f"./usr/share/doc/{package}/{member}" for member in missing]
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        unpack = subprocess.run(f"dpkg-deb --fsys-tarfile '{debs[-1]}' | tar -x -C '{tmp}' "
                                + " ".join(f"'{path}'" for path in inner), shell=True, capture_output=True, text=True)
        for member, path in zip(missing, inner):
            extracted = Path(tmp) / path
            if not extracted.is_file():
                raise InputNotFoundError(f"{debs[-1].name} holds no {path} ({unpack.stderr.strip()[:200]})")
            (root / member).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(extracted), root / member)
    return targets


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"validation image not readable: {path}")
    return image


def _package_file(package: str, member: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / member
    return path if path.is_file() else None


# -- models ---------------------------------------------------------------------------------------

def home_under(work: Path, name: str) -> Path:
    """A cache home under `work` for the recipe or copy called `name` (a safe folder name)."""
    return work / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def linked_model_dir(source: Path, home: Path, model: str) -> Path:
    """`home`/models/`model`, made where missing, with the FP32 ONNX files of the model folder
    `source` linked in, not copied."""
    target = home / "models" / model
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.onnx"):
        if not (target / path.name).exists():
            os.symlink(path.resolve(), target / path.name)
    return target


def recipe_home(config: Settings, work: Path, name: str, overrides: list[str]) -> Settings:
    """The config of one recipe: the prepared home for the configured recipe, else its own cache
    home under `work` (FP32 files linked from the prepared home), its INT8 model built there once
    and reused while current."""
    from posestream.stream.demo_clip import calibration_frames
    from posestream.engines.models import load_card
    from posestream.engines.quantize import ensure_int8

    if not overrides:  # the configured recipe: the prepared home's own INT8 model
        recipe = config.with_overrides({"engine.precision": "int8", "engine.backend": "openvino"})
        card, directory = load_card(recipe, recipe.model.name)
        ensure_int8(recipe, card, directory, calibration_frames)
        return recipe
    source = home_dir(config) / "models" / config.model.name
    home = home_under(work, name)
    model = linked_model_dir(source, home, config.model.name)
    if not (model / "model.json").is_file():
        card = json.loads((source / "model.json").read_text(encoding="utf-8"))
        card["extra"].pop(INT8_KEY, None)
        (model / "model.json").write_text(json.dumps(card), encoding="utf-8")
    pairs = {key: parse_value(value) for key, value in (item.split("=", 1) for item in overrides)}
    recipe = config.with_overrides({**pairs, "paths.home": str(home), "engine.precision": "int8",
                                    "engine.backend": "openvino"})
    card, directory = load_card(recipe, recipe.model.name)
    start = time.perf_counter()
    ensure_int8(recipe, card, directory, calibration_frames)
    log.info("recipe %s ready (%.0f s)", name, time.perf_counter() - start)
    return recipe


def int8_path(recipe: Settings) -> Path:
    from posestream.engines.models import load_card

    card, directory = load_card(recipe, recipe.model.name)
    return directory / card.extra[INT8_KEY]["file"]


def fp32_path(config: Settings) -> Path:
    from posestream.engines.models import load_card

    card, directory = load_card(config, config.model.name)
    return card.file(directory, "dynamic")


def exact_int8(model: Any) -> int:
    """Write every FakeQuantize of an OpenVINO `model` out as float math, in place: clamp to the
    input range, scale to levels - 1 steps, round, scale to the output range (the op's definition).
    OpenVINO turns FakeQuantize into INT8 kernels; these ops it runs in float, so the model computes
    the same quantized values without the CPU's INT8 arithmetic. Returns how many were rewritten."""
    import openvino.opset13 as ops

    count = 0
    for fq in [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]:
        x, in_low, in_high, out_low, out_high = (fq.input_value(i) for i in range(5))
        steps = ops.constant(np.float32(fq.get_attributes()["levels"] - 1))
        clamped = ops.minimum(ops.maximum(x, in_low), in_high)
        level = ops.round(ops.multiply(ops.divide(ops.subtract(clamped, in_low),
                                                  ops.subtract(in_high, in_low)), steps), "half_to_even")
        value = ops.add(ops.multiply(ops.divide(level, steps), ops.subtract(out_high, out_low)), out_low)
        for target in list(fq.output(0).get_target_inputs()):
            target.replace_source_output(value.output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count


JITTER_SIZE = 1e-6  # relative; two builds of one recipe on two CPUs differed by 1e-7 - 1.2e-5 (docs/benchmarks.md)


def jittered_int8(model: Any, size: float, seed: int) -> int:
    """Multiply, in place, every activation quantizer's range and every convolution's bias of an
    OpenVINO INT8 `model` by 1 + size * u (u uniform in -1..1 per value; a quantizer's input and
    output range alike): the float last-digit differences between two builds of one recipe on two
    CPUs, whose NNCF statistics and bias correction run FP32 kernels that sum in another order per
    instruction set. Weights stay. Returns how many constants moved."""
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)

    def moved(node: Any) -> Any:
        data = node.get_data().astype(np.float32)
        return ops.constant((data * (1 + size * rng.uniform(-1, 1, data.shape))).astype(np.float32))

    count = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            sources = [op.input_value(i).get_node() for i in range(1, 5)]
            if any(source.get_type_name() != "Constant" for source in sources):
                continue
            low, high = moved(sources[0]), moved(sources[1])
            for index, new in ((1, low), (2, high), (3, low), (4, high)):
                op.input(index).replace_source_output(new.output(0))
            count += 2
        elif kind == "Add":
            inputs = [op.input_value(i).get_node() for i in range(2)]
            kinds = [node.get_type_name() for node in inputs]
            if "Constant" in kinds and ({"Convolution", "GroupConvolution"} & set(kinds)):
                index = kinds.index("Constant")
                op.input(index).replace_source_output(moved(inputs[index]).output(0))
                count += 1
    model.validate_nodes_and_infer_types()
    return count


def jitter_home(recipe: Settings, work: Path, seed: int, size: float) -> Settings:
    """A cache home under `work` whose INT8 model is `recipe`'s with `jittered_int8(size, seed)`
    applied (the card copied, its INT8 entry pointing at the jittered files; FP32 files linked)."""
    import openvino as ov

    from posestream.engines.model_card import sha256_file
    from posestream.engines.models import load_card

    card, source = load_card(recipe, recipe.model.name)
    home = work / f"jitter-{seed}"
    shutil.rmtree(home / "models" / recipe.model.name, ignore_errors=True)  # the last run's copy
    target = linked_model_dir(source, home, recipe.model.name)
    entry = card.extra[INT8_KEY]
    model = ov.Core().read_model(str(source / entry["file"]))
    jittered_int8(model, size, seed)
    stem = Path(entry["file"]).stem
    ov.save_model(model, str(target / f"{stem}.xml"), compress_to_fp16=False)
    entry.update(file=f"{stem}.xml", sha256=sha256_file(target / f"{stem}.xml"),
                 weights=f"{stem}.bin", weights_sha256=sha256_file(target / f"{stem}.bin"))
    card.save(target)
    return recipe.with_overrides({"paths.home": str(home)})


class Runner:
    """Decoded persons of one OpenVINO model (the detector's letterbox, thresholds and decoding),
    compiled static per input shape; `widen` turns the matching activation quantizers to 16 bits,
    `exact` computes the quantized model without INT8 kernels (`exact_int8`)."""

    def __init__(self, path: Path, config: Settings, widen: str | None = None, exact: bool = False) -> None:
        import openvino as ov

        self.ov, self.core, self.config = ov, ov.Core(), config
        self.model = self.core.read_model(str(path))
        if widen is not None:
            for op in self.model.get_ops():
                name = op.get_friendly_name()
                if op.get_type_name() == "FakeQuantize" and re.search(widen, name) and KEEP_8BIT not in name:
                    op.set_attribute("levels", 65536)
        if exact:
            exact_int8(self.model)
        self._compiled: dict[tuple[int, ...], Any] = {}

    def request(self, shape: tuple[int, ...]) -> Any:
        if shape not in self._compiled:
            model = self.model.clone()
            model.reshape({model.inputs[0]: self.ov.PartialShape(list(shape))})
            self._compiled[shape] = self.core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        return self._compiled[shape]

    def persons(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        from posestream.engines.preprocess import canvas_size, letterbox, to_input
        from posestream.engines.families.yolo11.decode import decode_yolo_pose, to_frame_pixels

        det = self.config.detector
        found = []
        for image in images:
            height, width = image.shape[:2]
            canvas, box = letterbox(image, canvas_size(height, width, det.input_size, rectangular=True), 114)
            x = to_input([canvas])
            request = self.request(x.shape)
            request.infer({0: x})
            output = request.get_output_tensor(0).data[0].copy()
            boxes, scores, keypoints = decode_yolo_pose(output, det.score_threshold, det.iou_threshold,
                                                        det.max_persons)
            xywh, scores, keypoints = to_frame_pixels(boxes, scores, keypoints, box, height, width)
            found.append((xywh, scores, keypoints))
        return found


# -- agreement ------------------------------------------------------------------------------------

def _oks(truth: np.ndarray, box: np.ndarray, other: np.ndarray) -> float | None:
    visible = truth[:, 2] > 0.5
    if not visible.any():
        return None
    area = box[2] * box[3] * 0.53
    d2 = ((truth[:, :2] - other[:, :2]) ** 2).sum(1)
    return float(np.exp(-d2 / (2 * (2 * SIGMAS) ** 2 * (area + np.spacing(1))))[visible].mean())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return float(w * h / union) if union > 0 else 0.0


def agreement(truth: list, test: list) -> dict[str, Any]:
    """How closely `test` persons follow the FP32 persons `truth` (see the module docstring)."""
    best_oks, score_diff, missed, extra = [], [], 0, 0
    for (boxes, scores, keypoints), (t_boxes, t_scores, t_keypoints) in zip(truth, test):
        for i in np.flatnonzero(scores >= GT_SCORE):
            ious = [_iou(boxes[i], box) for box in t_boxes]
            j = int(np.argmax(ious)) if ious else None
            if j is None or ious[j] < 0.5:
                missed += 1
                best_oks.append(0.0)
                continue
            score_diff.append(abs(float(scores[i]) - float(t_scores[j])))
            oks = _oks(keypoints[i], boxes[i], t_keypoints[j])
            if oks is not None:  # None: no keypoint of this person is visible (e.g. cut by the frame edge)
                best_oks.append(oks)
                missed += oks < 0.5
        extra += sum(not any(_iou(t_boxes[j], b) > 0.5 for b in boxes) for j in np.flatnonzero(t_scores >= GT_SCORE))
    oks = np.asarray(best_oks)
    return {"persons": int(oks.size), "mean_oks": round(float(oks.mean()), 4) if oks.size else None,
            "p10_oks": round(float(np.percentile(oks, 10)), 4) if oks.size else None,
            "missed": int(missed), "extra": int(extra),
            "score_diff": round(float(np.mean(score_diff)), 4) if score_diff else None}


def agreement_metric(row: dict[str, Any]) -> float:
    """One number of an `agreement` row for NNCF's accuracy control: mean OKS - mean |score
    difference| (1 = the FP32 persons exactly; no person to compare counts as agreeing)."""
    oks = 1.0 if row["mean_oks"] is None else row["mean_oks"]
    return float(oks - (row["score_diff"] or 0.0))


def float_compute_ops(model: Any) -> set[str]:
    """Names of the convolutions and matrix products whose data input is not quantized."""
    names = set()
    for op in model.get_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul"):
            source = op.input_value(0).get_node()
            if source.get_type_name() != "FakeQuantize":
                names.add(op.get_friendly_name())
    return names


def accuracy_controlled(config: Settings, images: list[np.ndarray], truth: list, max_drop: float,
                        iterations: int, out_xml: Path) -> dict[str, Any]:
    """NNCF's accuracy-aware quantization of the configured recipe (see the module docstring);
    the model is saved to `out_xml`. Returns the layers it put back in float and the build time."""
    import openvino as ov

    from posestream.engines.calibration import default_calibration, network_inputs
    from posestream.engines.families.yolo11.decode import decode_yolo_pose, to_frame_pixels
    from posestream.engines.preprocess import canvas_size, letterbox, to_input
    from posestream.engines.quantize import quantize_with_accuracy_control
    from posestream.stream.demo_clip import calibration_frames

    det = config.detector
    calibration, _ = default_calibration(config, calibration_frames)
    samples = network_inputs(calibration[:config.quantize.images], det.input_size, 114)
    items = []
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        canvas, box = letterbox(image, canvas_size(height, width, det.input_size, rectangular=True), 114)
        items.append((to_input([canvas]), box, height, width, index))

    def validate(compiled: Any, data: Any) -> tuple[float, list[float]]:
        found, wanted = [], []
        for x, box, height, width, index in data:
            output = compiled({0: x})[compiled.outputs[0]][0]
            boxes, scores, keypoints = decode_yolo_pose(output, det.score_threshold, det.iou_threshold,
                                                        det.max_persons)
            xywh, scores, keypoints = to_frame_pixels(boxes, scores, keypoints, box, height, width)
            found.append((xywh, scores, keypoints))
            wanted.append(truth[index])
        per_item = [agreement_metric(agreement([t], [f])) for t, f in zip(wanted, found)]
        return agreement_metric(agreement(wanted, found)), per_item

    start = time.perf_counter()
    model = quantize_with_accuracy_control(fp32_path(config), samples, config.quantize, items, validate,
                                           max_drop, iterations)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    plain = ov.Core().read_model(str(int8_path(config)))
    return {"max_drop": max_drop, "iterations": iterations, "build_s": round(time.perf_counter() - start, 1),
            "put_back_in_float": sorted(float_compute_ops(model) - float_compute_ops(plain))}


def cpu_ms(paths: dict[str, Path], rounds: int = 6, runs: int = 10) -> dict[str, float]:
    """Median CPU time (user + sys of this process) of one inference per model at `LATENCY_SHAPE` on
    one thread, batches of `runs` alternated between the models for `rounds` rounds: CPU time, unlike
    wall time, stays comparable when other work shares the cores."""
    import openvino as ov

    core = ov.Core()
    x = np.random.default_rng(0).random(LATENCY_SHAPE, dtype=np.float32)
    requests = {}
    for name, path in paths.items():
        model = core.read_model(str(path))
        model.reshape({model.inputs[0]: ov.PartialShape(list(LATENCY_SHAPE))})
        requests[name] = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": 1}).create_infer_request()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, request in requests.items():
            request.infer({0: x})
            start = time.process_time()
            for _ in range(runs):
                request.infer({0: x})
            times[name].append((time.process_time() - start) / runs)
    return {name: round(1000 * statistics.median(t), 2) for name, t in times.items()}


# -- evaluation on the shared sets ------------------------------------------------------------------

SETS = [("COCO", "coco/person_keypoints.json", None), ("CrowdPose", "crowdpose/crowdpose_keypoints.json", None),
        ("Halpe-26", "halpe/halpe26_keypoints.json", "coco/images"),
        ("PoseTrack18", "posetrack/posetrack18_val_subset.json", None)]


def evaluate(config: Settings) -> dict[str, dict[str, Any]]:
    """AP/AP50/AP75/AR and the mean OKS per annotated person of `config` on every shared set."""
    from posestream.stream.evaluation import coco_keypoint_summary, load_ground_truth, person_oks
    from posestream.stream.image_inference import infer_images

    data = shared_dir(config) / "data"
    rows = {}
    for name, gt_file, images in SETS:
        gt_path = data / gt_file
        if not gt_path.is_file():
            continue
        gt = load_ground_truth(gt_path)
        folders = [data / images] if images else [gt_path.parent, gt_path.parent / "images"]
        paths = {str(folder / image["file_name"]): int(image["id"]) for image in gt["images"]
                 for folder in folders if (folder / image["file_name"]).is_file()}
        results = []
        for path, _, frame in infer_images(list(paths), config):
            results.extend(frame.to_alphapose(paths[str(path)]))
        metrics, _ = coco_keypoint_summary(gt_path, results, list(paths.values()))
        oks = person_oks(gt_path, results, list(paths.values()))
        rows[name] = {"AP": round(metrics["AP"], 3), "AP50": round(metrics["AP50"], 3),
                      "AP75": round(metrics["AP75"], 3), "AR": round(metrics["AR"], 3),
                      "mean_oks": round(float(np.mean(oks)), 4) if oks else None, "persons": len(oks)}
    return rows


# -- main -----------------------------------------------------------------------------------------

def parse_recipe(spec: str) -> tuple[str, list[str]]:
    """`NAME=key=value,key=value` -> (NAME, ["quantize.key=value", ...]); keys without a table are
    `[quantize]` keys."""
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        raise InputError(f"--recipe expects NAME=KEY=VALUE[,KEY=VALUE...], got '{spec}'")
    items = [item for item in rest.split(",") if item]
    return name, [item if "." in item.split("=", 1)[0] else f"quantize.{item}" for item in items]


def format_result(result: dict[str, Any]) -> list[str]:
    lines = [f"INT8 vs FP32 on {result['validation']['images']} validation images "
             f"({result['validation']['persons']} FP32 persons >= {GT_SCORE}); load {result['load_avg'][0]}",
             f"{'model':<34}{'mean OKS':>9}{'p10 OKS':>9}{'missed':>7}{'extra':>6}{'|dscore|':>9}"
             f"{'CPU ms':>8}{'build s':>8}"]
    def value(number: float | None) -> str:  # None: no FP32 person was found to compare with
        return "-" if number is None else f"{number:.4f}"

    def rows() -> list[tuple[str, dict[str, Any]]]:
        out = []
        for name, row in result["recipes"].items():
            out.append((name, row))
            if "exact" in row:
                out.append((f"{name}, exact INT8", {"agreement": row["exact"]}))
        return out

    for name, row in rows():
        a = row["agreement"]
        cpu = f"{row['cpu_ms']:>8.1f}" if "cpu_ms" in row else f"{'-':>8}"
        build = f"{row['build_s']:>8.0f}" if "build_s" in row else f"{'-':>8}"
        lines.append(f"{name[:33]:<34}{value(a['mean_oks']):>9}{value(a['p10_oks']):>9}{a['missed']:>7}{a['extra']:>6}"
                     f"{value(a['score_diff']):>9}{cpu}{build}")
    if "fp32_cpu_ms" in result:
        lines.append(f"{'FP32':<34}{'':>40}{result['fp32_cpu_ms']:>8.1f}")
    for name, row in result["recipes"].items():
        if "put_back_in_float" in row:
            lines.append(f"{name}: put back in float: {', '.join(row['put_back_in_float']) or 'none'}")
    if result.get("sensitivity"):
        lines += ["", f"sensitivity of '{result['sensitivity_of']}': one group's activations at 16 bits, the rest INT8",
                  f"{'group':<34}{'quantizers':>11}{'mean OKS':>9}{'p10 OKS':>9}{'|dscore|':>9}"]
        for name, row in result["sensitivity"].items():
            lines.append(f"{name:<34}{row['quantizers']:>11}{row['mean_oks']:>9.4f}{row['p10_oks']:>9.4f}"
                         f"{row['score_diff']:>9.4f}")
    if result.get("eval"):
        lines += ["", f"{'set':<13}{'model':<34}{'AP':>7}{'AP50':>7}{'AP75':>7}{'AR':>7}{'OKS/person':>11}"]
        for set_name, models in result["eval"].items():
            for name, row in models.items():
                oks = "-" if row["mean_oks"] is None else f"{row['mean_oks']:.4f}"
                lines.append(f"{set_name:<13}{name[:33]:<34}{row['AP']:>7.3f}{row['AP50']:>7.3f}"
                             f"{row['AP75']:>7.3f}{row['AR']:>7.3f}{oks:>11}")
    if result.get("jitter"):
        lines += jitter_lines(result)
    return lines


def jitter_lines(result: dict[str, Any]) -> list[str]:
    """Per recipe, the jittered copies' agreement and AP, then the medians and ranges over them next
    to the recipe's own model: what one build of that recipe can be expected to give."""
    jitter = result["jitter"]
    lines = []
    for recipe, copies in jitter["copies"].items():
        sets = list(copies[0].get("eval", {})) if copies else []
        lines += ["", f"{len(copies)} copies of '{recipe}', quantizer ranges and biases x (1 +- {jitter['size']:g})",
                  f"{'copy':<6}{'mean OKS':>9}{'p10 OKS':>9}{'missed':>7}{'|dscore|':>9}"
                  + "".join(f"{name:>13}" for name in sets)]

        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        for row in copies:
            a = row["agreement"]
            lines.append(f"{row['seed']:<6}{number(a['mean_oks']):>9}{number(a['p10_oks']):>9}{a['missed']:>7}"
                         f"{number(a['score_diff']):>9}" + "".join(f"{row['eval'][name]['AP']:>13.3f}" for name in sets))
        for key, label in (("mean_oks", "mean OKS"), ("score_diff", "|dscore|")):
            values = sorted(row["agreement"][key] for row in copies if row["agreement"][key] is not None)
            if values:
                lines.append(f"{label}: {values[0]:.4f} - {values[-1]:.4f} (median {statistics.median(values):.4f}) "
                             f"over the copies; '{recipe}' itself {number(result['recipes'][recipe]['agreement'][key])}")
        for name in sets:
            values = sorted(row["eval"][name]["AP"] for row in copies)
            itself = result.get("eval", {}).get(name, {}).get(recipe, {}).get("AP")
            lines.append(f"{name}: AP {values[0]:.3f} - {values[-1]:.3f} (median {statistics.median(values):.3f}) "
                         f"over the copies; '{recipe}' itself {'-' if itself is None else f'{itself:.3f}'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                        help="an extra INT8 recipe: [quantize] overrides, e.g. 'minmax=activation_ranges=minmax' "
                             "(repeatable)")
    parser.add_argument("--sensitivity", nargs="?", const="default", default=None, metavar="RECIPE",
                        help="per layer group study of a recipe's model (default: the configured recipe)")
    parser.add_argument("--accuracy-control", type=float, default=None, metavar="MAX_DROP",
                        help="also NNCF's accuracy-aware quantization of the configured recipe, allowed to "
                             "lose MAX_DROP of the agreement metric (mean OKS - mean |score diff|)")
    parser.add_argument("--iterations", type=int, default=6,
                        help="most rounds of putting layers back in float (--accuracy-control)")
    parser.add_argument("--exact", action="store_true",
                        help="also each recipe's agreement computed without INT8 kernels (exact quantized values)")
    parser.add_argument("--jitter", type=int, default=0, metavar="N",
                        help="also N copies of each recipe's model with its quantizer ranges and biases moved by "
                             "float last digits, as builds on other CPUs move them")
    parser.add_argument("--jitter-size", type=float, default=JITTER_SIZE, metavar="REL",
                        help=f"relative size of those moves (default {JITTER_SIZE:g})")
    parser.add_argument("--eval", action="store_true", help="also AP on every shared annotated set")
    parser.add_argument("--no-default", action="store_true", help="leave the configured recipe out")
    parser.add_argument("--work", type=Path, default=None,
                        help="where recipe models are built and kept (default: $POSESTREAM_HOME/int8-recipes)")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    config = load_config()
    work = args.work or home_dir(config) / "int8-recipes"
    recipes = {} if args.no_default else {"default": []}
    recipes.update(parse_recipe(spec) for spec in args.recipe)
    named = validation_images(config)
    images = [image for _, image in named]
    fp32 = Runner(fp32_path(config), config)
    truth = fp32.persons(images)
    result: dict[str, Any] = {
        "benchmark": "int8 accuracy", "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
        "validation": {"images": len(images), "names": [n for n, _ in named],
                       "persons": int(sum((s >= GT_SCORE).sum() for _, s, _ in truth))},
        "recipes": {}}
    configs = {}
    for name, overrides in recipes.items():
        start = time.perf_counter()
        configs[name] = recipe_home(config, work, name, overrides)
        row: dict[str, Any] = {"overrides": overrides, "build_s": round(time.perf_counter() - start, 1)}
        row["agreement"] = agreement(truth, Runner(int8_path(configs[name]), config).persons(images))
        if args.exact:
            row["exact"] = agreement(truth, Runner(int8_path(configs[name]), config, exact=True).persons(images))
        result["recipes"][name] = row
        log.info("%s: %s%s", name, row["agreement"], f"; exact INT8: {row['exact']}" if args.exact else "")
    paths = {"FP32": fp32_path(config), **{n: int8_path(c) for n, c in configs.items()}}
    if args.accuracy_control is not None:
        if "default" not in configs:
            raise InputError("--accuracy-control starts from the configured recipe: leave out --no-default")
        name = f"accuracy control (max drop {args.accuracy_control})"
        paths[name] = work / "accuracy-control" / "model.xml"
        row = accuracy_controlled(config, images, truth, args.accuracy_control, max(1, args.iterations), paths[name])
        row["agreement"] = agreement(truth, Runner(paths[name], config).persons(images))
        result["recipes"][name] = row
        log.info("%s: %s; put back in float: %s", name, row["agreement"], ", ".join(row["put_back_in_float"]) or "none")
    cpu = cpu_ms(paths)
    result["fp32_cpu_ms"] = cpu.pop("FP32")
    for name, ms in cpu.items():
        result["recipes"][name]["cpu_ms"] = ms
    if args.sensitivity is not None:
        if args.sensitivity not in configs:
            raise InputError(f"--sensitivity {args.sensitivity}: no such recipe (have {', '.join(configs)})")
        first = args.sensitivity
        result["sensitivity_of"] = first
        result["sensitivity"] = {}
        for group, pattern in GROUPS:
            runner = Runner(int8_path(configs[first]), config, widen=pattern)
            count = sum(op.get_type_name() == "FakeQuantize" and op.get_attributes()["levels"] == 65536
                        for op in runner.model.get_ops())
            result["sensitivity"][group] = {"quantizers": int(count), **agreement(truth, runner.persons(images))}
            log.info("sensitivity %s: %s", group, result["sensitivity"][group])
    if args.jitter > 0:
        result["jitter"] = {"size": args.jitter_size, "copies": {}}
        for name, recipe in configs.items():
            copies = result["jitter"]["copies"].setdefault(name, [])
            for seed in range(1, args.jitter + 1):
                copy = jitter_home(recipe, home_under(work / "jitter", name), seed, args.jitter_size)
                row = {"seed": seed, "agreement": agreement(truth, Runner(int8_path(copy), config).persons(images))}
                if args.eval:
                    row["eval"] = evaluate(copy)
                copies.append(row)
                log.info("jitter %d of %s: %s", seed, name, row)
    if args.eval:
        fp32_config = config.with_overrides({"engine.precision": "fp32", "engine.backend": "openvino"})
        per_model = {"FP32": evaluate(fp32_config), **{name: evaluate(c) for name, c in configs.items()}}
        result["eval"] = {}
        for model, rows in per_model.items():
            for set_name, row in rows.items():
                result["eval"].setdefault(set_name, {})[model] = row
    emit(format_result(result), result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
