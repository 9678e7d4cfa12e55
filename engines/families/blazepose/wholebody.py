"""Whole body (Halpe-136) for the `blazepose` plugin: hand and face crops from the body landmarks, run
through MediaPipe's hand (`mediapipe-hand`) and face-mesh (`mediapipe-face`) landmark models.

Crops (square, rotated with `rotated_crop_matrices`, batched across persons and frames):
- hand: from BlazePose's wrist (15/16) and the middle of its index and pinky points (19/20, 17/18),
  `d` = wrist -> that middle. Centre = wrist + `HAND_CENTRE` x d, side = `HAND_SIDE` x |d| (at least
  `HAND_MIN_SIDE` x the person's box side), turned so that d points up (the hand model's training
  pose: wrist at the bottom, fingers up).
- face: centre = midpoint of the eye centre and the mouth centre; side = `FACE_SIDE` x the larger of
  the ear-to-ear distance and twice the eyes-to-mouth distance; turned so that the line from the
  right eye (BlazePose 5) to the left eye (2) is horizontal.
Only persons whose box's longer side is at least `pose.wholebody_min_size` pixels get crops; the
others get score 0 there, their face points placed on the nose and hand points on the wrists;
hands/faces whose model flag is below `pose.wholebody_min_flag` keep the model's points with score 0.

Point scores: a hand's 21 points get its hand flag (probability that a hand is in the crop); the
68 face points get sigmoid(face flag logit).

Hand points: MediaPipe's 21 hand landmarks come in the order wrist, thumb CMC/MCP/IP/tip, then
index, middle, ring and pinky MCP/PIP/DIP/tip: the order of Halpe's wrist, thumb1-4,
forefinger1-4, middle_finger1-4, ring_finger1-4, pinky_finger1-4 (checked against the Halpe-136
ground truth in `tests/engines/families/blazepose/test_wholebody.py`). Left hand from the person's left wrist.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from posestream.engines.runner import ModelRunner
from posestream.engines.crops import crop_to_frame, rotated_crop_matrices, warp_with
from posestream.stream.core.errors import ModelError
from posestream.stream.core.settings import Settings

HAND_MODEL, FACE_MODEL = "mediapipe-hand", "mediapipe-face"
HAND_POINTS, FACE_MESH_POINTS, FACE_POINTS = 21, 468, 68
FACE_START, LEFT_HAND_START, RIGHT_HAND_START = 26, 94, 115
# BlazePose indices: (wrist, pinky, index) per hand, person's left first.
_HANDS = ((15, 17, 19), (16, 18, 20))
_NOSE, _LEFT_EYE, _RIGHT_EYE, _LEFT_EAR, _RIGHT_EAR, _MOUTH = 0, 2, 5, 7, 8, (9, 10)
HAND_CENTRE = 0.9  # along wrist -> knuckles, in units of that distance
HAND_SIDE = 4.0    # crop side, in units of the wrist -> knuckles distance
HAND_MIN_SIDE = 0.15  # ... but at least this fraction of the person's box's longer side
FACE_SIDE = 1.7

# iBUG-68 point i = face-mesh vertex FACE68_FROM_MESH[i]. Derived by `derive_face68` (the rules are
# its docstring) from the contours in mediapipe 0.10.21's `mediapipe/python/solutions/
# face_mesh_connections.py` (read as data, mediapipe is not imported) on the mesh that our
# `mediapipe-face` model puts on the frontal face of scikit-image's public-domain astronaut photo
# (`skimage.data.astronaut()`, upright crop of side 170 px centred at (222, 122));
# `tests/engines/families/blazepose/test_wholebody.py` derives it again and compares. The face is slightly
# turned, so the table's left and right halves need not be vertex-for-vertex mirror images.
FACE68_FROM_MESH = (
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,  # jaw
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
    168, 197, 195, 4, 64, 97, 2, 326, 294,  # nose
    33, 159, 157, 133, 153, 144, 362, 385, 386, 263, 373, 380,  # eyes
    61, 39, 37, 0, 267, 270, 291, 321, 405, 17, 84, 91,  # outer lips
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class _LandmarkModel(ModelRunner):
    """One MediaPipe landmark model (hand or face): square RGB [0, 1] crops in, landmarks in input
    pixels (MediaPipe's x = 0.5 is pixel 0 of our convention) out."""

    tasks = ("pose-landmarks",)

    def __init__(self, settings: Settings, model: str, points: int, flag: str) -> None:
        super().__init__(settings, model, settings.pose.threads)
        self.torch_inputs = None  # rotated crops are cut with OpenCV
        size = self.card.input.get("size") or [0, 0]
        if len(size) != 2 or size[0] != size[1] or size[0] <= 0:
            self.close()
            raise ModelError(f"model '{model}': square landmark input expected, card says size {size}")
        self.size, self.points, self.flag = int(size[0]), points, flag
        self.take_images(settings)  # the card's normalisation; uint8 crops into the model with OpenVINO
        self._name = self.engine.inputs[0].name

    def __call__(self, crops: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks [N,points,2] in crop pixels and the raw flag [N] of BGR uint8 crops [N,S,S,3]."""
        coords, flags = [], []
        for start in range(0, len(crops), batch):
            x = self.model_input(crops[start:start + batch])
            out = self.run({self._name: x})
            values = np.asarray(out["landmarks"], dtype=np.float64).reshape(len(x), self.points, -1)
            coords.append(values[..., :2] - 0.5)
            flags.append(np.asarray(out[self.flag], dtype=np.float64).reshape(-1))
        return np.concatenate(coords), np.concatenate(flags)


def hand_rois(body: np.ndarray, box_sides: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres [N,2,2], sides [N,2] and angles [N,2] of the left and right hand crops of persons
    with BlazePose landmarks `body` [N,33,>=2] (frame pixels) and box longer sides [N]."""
    centres, sides, angles = [], [], []
    for wrist, pinky, index in _HANDS:
        w = body[:, wrist, :2]
        d = (body[:, pinky, :2] + body[:, index, :2]) / 2.0 - w
        length = np.linalg.norm(d, axis=1)
        centres.append(w + HAND_CENTRE * d)
        sides.append(np.maximum(HAND_SIDE * length, HAND_MIN_SIDE * box_sides))
        angles.append(np.arctan2(d[:, 0], -d[:, 1]))
    return np.stack(centres, 1), np.stack(sides, 1), np.stack(angles, 1)


def face_rois(body: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres [N,2], sides [N] and angles [N] of the face crops of persons with BlazePose
    landmarks `body` [N,33,>=2] (frame pixels)."""
    eyes = (body[:, _LEFT_EYE, :2] + body[:, _RIGHT_EYE, :2]) / 2.0
    mouth = body[:, _MOUTH, :2].mean(1)
    ears = np.linalg.norm(body[:, _LEFT_EAR, :2] - body[:, _RIGHT_EAR, :2], axis=1)
    side = FACE_SIDE * np.maximum(ears, 2.0 * np.linalg.norm(eyes - mouth, axis=1))
    eye_line = body[:, _LEFT_EYE, :2] - body[:, _RIGHT_EYE, :2]
    return (eyes + mouth) / 2.0, side, np.arctan2(eye_line[:, 1], eye_line[:, 0])


class WholeBody:
    """`WholeBody(settings)`: adds Halpe-136's face and hand points to BlazePose body results."""

    def __init__(self, settings: Settings) -> None:
        self.min_size = settings.pose.wholebody_min_size
        self.min_flag = settings.pose.wholebody_min_flag
        self.batch = settings.pose.batch
        self.hand = _LandmarkModel(settings, HAND_MODEL, HAND_POINTS, "hand_flag")
        try:
            self.face = _LandmarkModel(settings, FACE_MODEL, FACE_MESH_POINTS, "face_flag")
        except BaseException:
            self.hand.close()
            raise
        for model, fmt in ((self.hand, "hand21"), (self.face, "face468")):
            if model.card.keypoint_format != fmt:
                self.close()
                raise ModelError(f"model '{model.card.name}' gives '{model.card.keypoint_format}' "
                                 f"landmarks; whole-body mode needs '{fmt}'")

    def extend(self, frames: Sequence[np.ndarray], bodies: Sequence[np.ndarray],
               boxes: Sequence[np.ndarray], halpe26: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Halpe-136 keypoints [N,136,3] per frame from the BlazePose landmarks xy [N,33,2] (frame
        pixels), boxes [N,4] (x, y, w, h) and Halpe-26 body points [N,26,3] of each frame."""
        out = []
        hand_crops, hand_m, face_crops, face_m, where = [], [], [], [], []
        for f, (frame, body, box, body26) in enumerate(zip(frames, bodies, boxes, halpe26)):
            kp = np.zeros((len(body), 136, 3))
            kp[:, :26] = body26
            # score-0 placeholders where no crop runs: the nose for the face, the wrists for hands
            kp[:, FACE_START:FACE_START + FACE_POINTS, :2] = body[:, None, _NOSE, :2]
            for (wrist, _, _), start in zip(_HANDS, (LEFT_HAND_START, RIGHT_HAND_START)):
                kp[:, start:start + HAND_POINTS, :2] = body[:, None, wrist, :2]
            out.append(kp)
            big = np.flatnonzero(box[:, 2:].max(1, initial=0) >= self.min_size) if len(box) else []
            if not len(big):
                continue
            sides = box[big, 2:].max(1)
            centres, hsides, angles = hand_rois(body[big], sides)
            m = rotated_crop_matrices(centres.reshape(-1, 2), hsides.reshape(-1), angles.reshape(-1),
                                      self.hand.size)
            hand_crops.append(warp_with(frame, m, (self.hand.size, self.hand.size)))
            hand_m.append(m)
            fc, fs, fa = face_rois(body[big])
            m = rotated_crop_matrices(fc, fs, fa, self.face.size)
            face_crops.append(warp_with(frame, m, (self.face.size, self.face.size)))
            face_m.append(m)
            where.extend((f, p) for p in big)
        if not where:
            return out
        hands, hand_flags = self.hand(np.concatenate(hand_crops), self.batch)
        hands = crop_to_frame(hands, np.concatenate(hand_m)).reshape(len(where), 2, HAND_POINTS, 2)
        hand_flags = hand_flags.reshape(len(where), 2)
        mesh, face_logits = self.face(np.concatenate(face_crops), self.batch)
        faces = crop_to_frame(mesh[:, FACE68_FROM_MESH], np.concatenate(face_m))
        face_flags = _sigmoid(face_logits)
        for i, (f, p) in enumerate(where):
            kp = out[f][p]
            kp[FACE_START:FACE_START + FACE_POINTS, :2] = faces[i]
            kp[FACE_START:FACE_START + FACE_POINTS, 2] = face_flags[i] if face_flags[i] >= self.min_flag else 0.0
            for h, start in enumerate((LEFT_HAND_START, RIGHT_HAND_START)):
                kp[start:start + HAND_POINTS, :2] = hands[i, h]
                kp[start:start + HAND_POINTS, 2] = hand_flags[i, h] if hand_flags[i, h] >= self.min_flag else 0.0
        return out

    def close(self) -> None:
        self.hand.close()
        self.face.close()


def _paths(edges: set[tuple[int, int]]) -> list[list[int]]:
    """The chains (open or closed; a closed one repeats its first vertex) formed by undirected edges."""
    links: dict[int, list[int]] = {}
    for a, b in edges:
        links.setdefault(a, []).append(b)
        links.setdefault(b, []).append(a)
    ends = [v for v, n in links.items() if len(n) == 1]
    seen: set[int] = set()
    paths = []
    for start in ends + sorted(links):
        if start in seen:
            continue
        path, prev = [start], None
        seen.add(start)
        while True:
            nxt = [n for n in links[path[-1]] if n != prev and (n not in seen or n == start and len(path) > 2)]
            if not nxt:
                break
            prev = path[-1]
            path.append(nxt[0])
            if nxt[0] == start:
                break
            seen.add(nxt[0])
        paths.append(path)
    return paths


def _between(cycle: list[int], a: int, b: int, xy: np.ndarray) -> tuple[list[int], list[int]]:
    """The two arcs of a closed chain from vertex a to vertex b, upper (smaller mean y) first."""
    ring = cycle[:-1]
    i = ring.index(a)
    ring = ring[i:] + ring[:i]
    j = ring.index(b)
    one, two = ring[:j + 1], [a] + ring[j:][::-1]
    return (one, two) if xy[one, 1].mean() <= xy[two, 1].mean() else (two, one)


def _sample(path: list[int], fractions: Sequence[float], xy: np.ndarray) -> list[int]:
    """The path vertices nearest (in the image) to the points at `fractions` of its arc length."""
    pts = xy[path]
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    out = []
    for f in fractions:
        target = np.array([np.interp(f * arc[-1], arc, pts[:, k]) for k in (0, 1)])
        out.append(path[int(np.argmin(np.linalg.norm(pts - target, axis=1)))])
    return out


def derive_face68(mesh: np.ndarray, connections: dict[str, set[tuple[int, int]]]) -> tuple[int, ...]:
    """The 468 -> iBUG-68 table from a frontal face mesh `mesh` [468,3] (x, y image pixels, z
    depth, smaller = nearer the camera; the subject faces the camera, so the subject's right is
    image left) and MediaPipe's contour edge sets (`FACEMESH_FACE_OVAL`, `_LIPS`, `_LEFT_EYE`,
    `_RIGHT_EYE`, `_LEFT_EYEBROW`, `_RIGHT_EYEBROW`, `_NOSE` of `face_mesh_connections.py`).
    "Left"/"right" are image sides; "at fraction f of an arc" = the arc's vertex nearest (in the
    image) to the point at f of its arc length.

    First the points are turned about the origin so that the line between the eye contours'
    centres is level (no roll).
    - jaw 0-16: 8 = the chin (the face oval's lowest vertex); from it the oval runs both ways up to
      its last vertex below the outer eye corners' mean height; 0-8 at 0, 1/8, ..., 1 of the left
      arc (from its top end down to the chin), 8-16 likewise on the right arc (chin up);
    - brows 17-21 / 22-26: each brow contour is an upper and a lower chain of 5 vertices; the upper
      one (smaller mean y), left to right;
    - nose 27-30: the nose contour's midline (the shortest chain from its topmost end vertex to
      its bottom fork, where the two nostril-wing chains meet it) from the top to the tip (the
      midline vertex nearest the camera, smallest z), at 4 equal steps;
    - nose 31-35: 33 = the bottom fork; each wing chain from there to its vertex farthest from the
      midline's mean x: that vertex is 31 (left) / 35 (right), the vertex at 1/2 is 32 / 34;
    - eyes 36-41 / 42-47: corners 36/39 (42/45) = the eye contour's left/rightmost vertices; 37,
      38 at 1/3, 2/3 of the upper arc (left to right); 40, 41 at 1/3, 2/3 of the lower arc from
      the right corner back to the left one (iBUG runs round clockwise);
    - mouth 48-59: outer lip contour (the wider closed chain); corners 48/54 = left/rightmost;
      49-53 at 1/6 ... 5/6 of the upper arc, 55-59 at 1/6 ... 5/6 of the lower arc from 54 back to
      48; inner lips 60-67 likewise, 61-63 and 65-67 at 1/4 ... 3/4.
    """
    xy = np.asarray(mesh, dtype=np.float64)[:, :2]
    z = np.asarray(mesh, dtype=np.float64)[:, 2]
    table: list[int] = []
    eyes = sorted((_paths(connections[k])[0] for k in ("FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE")),
                  key=lambda c: xy[c, 0].mean())
    line = xy[eyes[1]].mean(0) - xy[eyes[0]].mean(0)  # turn the face so that the eye line is level
    angle = np.arctan2(line[1], line[0])
    xy = xy @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = [(min(c[:-1], key=lambda v: xy[v, 0]), max(c[:-1], key=lambda v: xy[v, 0])) for c in eyes]
    level = (xy[corners[0][0], 1] + xy[corners[1][1], 1]) / 2.0
    # jaw
    ring = _paths(connections["FACEMESH_FACE_OVAL"])[0][:-1]
    chin = max(ring, key=lambda v: xy[v, 1])
    i = ring.index(chin)
    ring = ring[i:] + ring[:i]
    halves = []
    for way in (ring, ring[:1] + ring[1:][::-1]):  # from the chin round both ways up to the eye level
        halves.append(way[:next(n for n, v in enumerate(way) if xy[v, 1] < level)])
    left, right = sorted(halves, key=lambda h: xy[h, 0].mean())
    steps = np.linspace(0.0, 1.0, 9)
    table += _sample(left[::-1], steps, xy)[:-1] + _sample(right, steps, xy)
    # brows
    for key in sorted(("FACEMESH_LEFT_EYEBROW", "FACEMESH_RIGHT_EYEBROW"),
                      key=lambda k: xy[[a for a, _ in connections[k]], 0].mean()):
        upper = min(_paths(connections[key]), key=lambda c: xy[c, 1].mean())
        table += sorted(upper, key=lambda v: xy[v, 0])
    # nose
    links: dict[int, list[int]] = {}
    for a, b in connections["FACEMESH_NOSE"]:
        links.setdefault(a, []).append(b)
        links.setdefault(b, []).append(a)
    top = min((v for v, n in links.items() if len(n) == 1), key=lambda v: xy[v, 1])
    bottom = max((v for v, n in links.items() if len(n) == 3), key=lambda v: xy[v, 1])
    parent, queue = {top: top}, [top]
    for v in queue:  # breadth-first: the shortest chain top -> bottom
        for n in links[v]:
            if n not in parent:
                parent[n] = v
                queue.append(n)
    midline = [bottom]
    while midline[-1] != top:
        midline.append(parent[midline[-1]])
    midline = midline[::-1]
    tip = min(midline, key=lambda v: z[v])
    table += _sample(midline[:midline.index(tip) + 1], np.linspace(0.0, 1.0, 4), xy)
    mid_x = xy[midline, 0].mean()
    wings = []
    for first in (n for n in links[bottom] if n not in midline):
        path, prev = [bottom, first], bottom
        while len(links[path[-1]]) == 2:
            prev, nxt = path[-1], next(n for n in links[path[-1]] if n != prev)
            path.append(nxt)
        far = max(range(len(path)), key=lambda n: abs(xy[path[n], 0] - mid_x))
        wings.append(path[:far + 1])
    left, right = sorted(wings, key=lambda p: xy[p[-1], 0])
    table += [left[-1], _sample(left, [0.5], xy)[0], bottom, _sample(right, [0.5], xy)[0], right[-1]]
    # eyes
    for c, (a, b) in zip(eyes, corners):
        upper, lower = _between(c, a, b, xy)
        table += [a, *_sample(upper, [1 / 3, 2 / 3], xy), b, *_sample(lower[::-1], [1 / 3, 2 / 3], xy)]
    # lips: the outer and the inner closed chain
    for c, n in zip(sorted(_paths(connections["FACEMESH_LIPS"]), key=lambda c: -np.ptp(xy[c, 0])), (6, 4)):
        a, b = min(c[:-1], key=lambda v: xy[v, 0]), max(c[:-1], key=lambda v: xy[v, 0])
        upper, lower = _between(c, a, b, xy)
        steps = [s / n for s in range(1, n)]
        table += [a, *_sample(upper, steps, xy), b, *_sample(lower[::-1], steps, xy)]
    return tuple(int(v) for v in table)
