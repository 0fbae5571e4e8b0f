"""21 keypoints per hand (MediaPipe Hands models, bundled in the mediapipe wheel), lifted to 3D.

Why the hand region comes from the body pose rather than from a palm detector on the whole image:
the skeleton pipeline already has the operator's BlazePose wrist, index and pinky knuckles on every
frame, and MediaPipe's own holistic hand graph (`HandLandmarksLeftAndRightCpu`, in the wheel with
`hand_recrop.tflite` and `hand_landmark_full.tflite`/`_lite.tflite`) turns exactly those into a hand
crop, refines it with the small re-crop model and runs the landmark model on it. Compared with the
`mediapipe.solutions.hands` route (palm detector on the 192x192 whole image):
- a hand 20-40 px wide in a 640x480 full-body view is a few pixels for the palm detector but fills
  the landmark model's 224x224 crop;
- the side (left/right) is the body's, anatomical, and the landmark model's own handedness output
  only checks it: MediaPipe's handedness assumes a mirrored selfie image, a robot camera is not
  mirrored, and two hands near each other are easily swapped by a detector;
- the hands are the operator's, never a bystander's, and no palm detector runs on any frame.
The cost: no hands without a body pose (hands alone in view, e.g. first-person video, give none),
which does not happen in teleoperation, where the operator's body is what drives the robot.

The graph's hand-presence score, handedness and metric ("world") landmarks are internal streams
of that subgraph; `MediaPipeHandBackend` expands the subgraph and exposes them (checked at start,
so a mediapipe release that renames them fails loudly instead of returning nothing). The landmark
model has no per-keypoint visibility: every keypoint inside the image carries the hand's presence
score, one outside it 0.

3D: `lift_hand` is `lifting.lift_keypoints`, the body's lifting, with the palm (wrist + knuckles)
as anchors, a small depth window and tight gates (`hand_lifting_config`); keypoints without an
accepted depth take the model's metric hand landmarks aligned to the depth-lifted ones (or placed
by PnP with no depth at all), exactly as body keypoints do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.human.conventions import BLAZEPOSE33_NAMES, HAND21, HAND21_NAMES, HAND21_PALM, HAND_SIDES
from pose_ros.human.keypoint_backend import UnsupportedModelError, validate_rgb
from pose_ros.human.lifting import LiftingConfig, lift_keypoints

NUM_HAND = len(HAND21_NAMES)
_WRIST, _MIDDLE_MCP = HAND21_NAMES.index("wrist"), HAND21_NAMES.index("middle_finger_mcp")
_LABEL_SIDE = {"Left": "right", "Right": "left"}   # MediaPipe's labels assume a mirrored image


class HandGraphError(RuntimeError):
    """The installed mediapipe lacks the hand subgraph streams this module reads."""


@dataclass
class HandDetection2D:
    """One hand in one image, HAND21 order.

    side: "left" | "right", the person's own hand (the body wrist it was found at).
    uv_px: (21, 2) pixel coordinates (u right, v down), may lie outside the image.
    confidence: (21,) the hand's presence score inside the image, 0 outside it.
    presence: hand presence score of the landmark model in [0, 1].
    handedness_score: the landmark model's probability in [0, 1] that this is a `side` hand.
    world_m: (21, 3) metric landmarks, hand-centred, camera-aligned axes; None if unavailable.
    """

    side: str
    uv_px: np.ndarray
    confidence: np.ndarray
    presence: float
    handedness_score: float
    world_m: np.ndarray | None

    def size_px(self) -> float:
        """Wrist to middle knuckle in pixels: the hand's scale in the image."""
        return float(np.linalg.norm(self.uv_px[_MIDDLE_MCP] - self.uv_px[_WRIST]))


@dataclass
class Hand3D:
    """One hand in one frame, HAND21 order. positions_cam_m NaN where source == SOURCE_NONE."""

    side: str
    positions_cam_m: np.ndarray   # (21, 3) camera optical frame, metres
    uv_px: np.ndarray             # (21, 2)
    confidence: np.ndarray        # (21,)
    source: np.ndarray            # (21,) int8 SOURCE_*
    presence: float
    handedness_score: float
    names: tuple[str, ...] = HAND21_NAMES
    convention: str = HAND21

    @property
    def score(self) -> float:
        return float(self.presence)


@runtime_checkable
class HandBackend(Protocol):
    """Anything that finds a person's hands given the image and that person's BlazePose keypoints."""

    def detect(self, rgb: np.ndarray, body_uv_px: np.ndarray, body_confidence: np.ndarray) -> list[HandDetection2D]:
        ...

    def reset(self) -> None:
        """Forget tracking state (a different person, or unrelated images)."""
        ...


def hand_lifting_config() -> LiftingConfig:
    """Depth lifting settings for hand keypoints (the body's are too coarse for fingers).

    Window ~0.6% of the image side (5 px at 640: a fingertip at 1-2 m is 5-10 px wide), keypoints
    within 0.25 m of the palm's depth, and within 6 cm of the depth the hand model expects (the
    background behind a finger is almost always farther than that)."""
    return LiftingConfig(window_frac=0.006, min_window_px=3, max_window_px=9, body_extent_m=0.25,
                         model_depth_tolerance_m=0.06)


def _check_body(body_uv_px: np.ndarray, body_confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uv = np.asarray(body_uv_px, dtype=np.float64)
    conf = np.asarray(body_confidence, dtype=np.float64)
    n = len(BLAZEPOSE33_NAMES)
    if uv.shape != (n, 2) or conf.shape != (n,):
        raise ValueError(f"body keypoints must be BlazePose-33: uv_px (33, 2) and confidence (33,), got "
                         f"{uv.shape} and {conf.shape}; pass Detection2D.uv_px/.confidence of the body backend")
    return uv, conf


def _side_probability(label: str, score: float, side: str) -> float:
    """P(the hand is `side`) from MediaPipe's binary handedness (label, score of that label)."""
    anatomical = _LABEL_SIDE.get(label)
    if anatomical is None:
        return float("nan")
    return float(score) if anatomical == side else 1.0 - float(score)


class MediaPipeHandBackend:
    """MediaPipe's holistic hand graph fed with our body keypoints: up to one hand per body wrist.

    model_complexity: 1 = hand_landmark_full (default), 0 = hand_landmark_lite; both ship in the
    wheel, nothing is downloaded. min_presence: the landmark model's hand-presence threshold.
    min_handedness: drop a hand whose own left/right classifier gives its side a probability below
    this (the crop at one wrist caught the other hand). min_wrist_visibility: skip a side whose body
    wrist is less visible. static_image_mode: forget the previous frame's hands before each image
    (unrelated photos); False tracks the hand crop from frame to frame like MediaPipe's video mode.
    """

    def __init__(self, model_complexity: int = 1, min_presence: float = 0.5, min_handedness: float = 0.3,
                 min_wrist_visibility: float = 0.1, static_image_mode: bool = False) -> None:
        if model_complexity not in (0, 1):
            raise UnsupportedModelError(
                f"hand model_complexity={model_complexity}: use 0 (hand_landmark_lite) or 1 "
                "(hand_landmark_full), the two models in the mediapipe wheel")
        for name, value in (("min_presence", min_presence), ("min_handedness", min_handedness),
                            ("min_wrist_visibility", min_wrist_visibility)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1]")
        self.model_complexity = model_complexity
        self.min_presence = float(min_presence)
        self.min_handedness = float(min_handedness)
        self.min_wrist_visibility = float(min_wrist_visibility)
        self.static_image_mode = static_image_mode
        self._graph, self._streams = self._build_graph()
        self._fresh = True

    def _build_graph(self):
        """The expanded HandLandmarksLeftAndRightCpu graph with our thresholds, model choice and the
        internal presence / handedness / world-landmark streams as outputs."""
        from google.protobuf import text_format
        from mediapipe.calculators.util import thresholding_calculator_pb2
        from mediapipe.framework import calculator_pb2
        from mediapipe.framework.tool import switch_container_pb2
        from mediapipe.python._framework_bindings import validated_graph_config
        from mediapipe.python.solution_base import SolutionBase

        config = text_format.Parse("""
            input_stream: "IMAGE:image"
            input_stream: "POSE_LANDMARKS:pose_landmarks"
            output_stream: "LEFT_HAND_LANDMARKS:left_hand_landmarks"
            output_stream: "RIGHT_HAND_LANDMARKS:right_hand_landmarks"
            node {
              calculator: "HandLandmarksLeftAndRightCpu"
              input_stream: "IMAGE:image"
              input_stream: "POSE_LANDMARKS:pose_landmarks"
              output_stream: "LEFT_HAND_LANDMARKS:left_hand_landmarks"
              output_stream: "RIGHT_HAND_LANDMARKS:right_hand_landmarks"
            }""", calculator_pb2.CalculatorGraphConfig())
        validated = validated_graph_config.ValidatedGraphConfig()
        validated.initialize(graph_config=config)
        graph = calculator_pb2.CalculatorGraphConfig()
        graph.ParseFromString(validated.binary_config)   # subgraphs expanded into plain calculators

        produced = {s.split(":")[-1]: node for node in graph.node for s in node.output_stream}
        streams: dict[str, dict[str, str]] = {}
        for side in HAND_SIDES:
            node = produced.get(f"{side}_hand_landmarks")
            if node is None or "handlandmarkcpu__" not in node.name:
                raise HandGraphError(f"mediapipe's HandLandmarksLeftAndRightCpu has no {side} hand landmark node "
                                     "where pose_ros expects it; install the pinned mediapipe==0.10.21")
            prefix = node.name.split("handlandmarkcpu__")[0] + "handlandmarkcpu__"
            streams[side] = {key: prefix + name for key, name in (
                ("presence", "hand_presence_score"), ("handedness", "handedness"), ("world", "hand_world_landmarks"))}
            for name in streams[side].values():
                if name not in produced:
                    raise HandGraphError(f"mediapipe's hand graph has no stream {name!r}; install the pinned "
                                         "mediapipe==0.10.21")
                graph.output_stream.append(name)
        thresholds = switches = 0
        for node in graph.node:
            if node.calculator in ("SwitchDemuxCalculator", "SwitchMuxCalculator") and "handlandmarkcpu__" in node.name:
                # the landmark model loader's switch: 0 = hand_landmark_lite, 1 = hand_landmark_full
                node.options.Extensions[switch_container_pb2.SwitchContainerOptions.ext].select = self.model_complexity
                switches += 1
            if node.calculator == "ThresholdingCalculator":
                ext = thresholding_calculator_pb2.ThresholdingCalculatorOptions.ext
                if node.name.endswith("handlandmarkcpu__ThresholdingCalculator"):
                    node.options.Extensions[ext].threshold = self.min_presence
                    thresholds += 1
                elif "handvisibilityfromhandlandmarksfrompose__" in node.name:
                    node.options.Extensions[ext].threshold = self.min_wrist_visibility
                    thresholds += 1
        if thresholds != 4 or switches != 4:
            raise HandGraphError(f"found {thresholds} of the 4 hand graph thresholds and {switches} of its 4 model "
                                 "switches; install the pinned mediapipe==0.10.21")
        return SolutionBase(graph_config=graph), streams

    def reset(self) -> None:
        """Forget the previous frame's hands (the graph restarts; ~ms)."""
        if not self._fresh:
            self._graph.reset()
            self._fresh = True

    def detect(self, rgb: np.ndarray, body_uv_px: np.ndarray, body_confidence: np.ndarray) -> list[HandDetection2D]:
        """Hands of the person whose BlazePose-33 keypoints are given (pixels, visibility in [0, 1]).
        Returns 0-2 hands, at most one per side, left first."""
        from mediapipe.framework.formats import landmark_pb2

        rgb = validate_rgb(rgb)
        body_uv, body_conf = _check_body(body_uv_px, body_confidence)
        height, width = rgb.shape[:2]
        if self.static_image_mode:
            self.reset()
        pose = landmark_pb2.NormalizedLandmarkList()
        for (u, v), c in zip(body_uv, body_conf):
            ok = bool(np.isfinite(u) and np.isfinite(v) and np.isfinite(c))
            vis = float(np.clip(c, 0.0, 1.0)) if ok else 0.0
            pose.landmark.add(x=float(u) / width if ok else 0.0, y=float(v) / height if ok else 0.0, z=0.0,
                              visibility=vis, presence=vis)
        result = self._graph.process({"image": rgb, "pose_landmarks": pose})
        self._fresh = False
        hands = []
        for side in HAND_SIDES:
            landmarks = getattr(result, f"{side}_hand_landmarks")
            if landmarks is None or len(landmarks.landmark) != NUM_HAND:
                continue
            streams = self._streams[side]
            presence = getattr(result, streams["presence"])
            presence = float(presence) if presence is not None else float("nan")
            handedness = getattr(result, streams["handedness"])
            p_side = float("nan")
            if handedness is not None and handedness.classification:
                top = handedness.classification[0]
                p_side = _side_probability(top.label, top.score, side)
            if np.isfinite(p_side) and p_side < self.min_handedness:
                continue   # the crop at this wrist holds the other hand
            uv = np.array([[lm.x * width, lm.y * height] for lm in landmarks.landmark], dtype=np.float64)
            if not np.all(np.isfinite(uv)):
                continue
            world = getattr(result, streams["world"])
            world_m = None
            if world is not None and len(world.landmark) == NUM_HAND:
                world_m = np.array([[lm.x, lm.y, lm.z] for lm in world.landmark], dtype=np.float64)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
            score = float(np.clip(presence, 0.0, 1.0)) if np.isfinite(presence) else 1.0
            hands.append(HandDetection2D(side=side, uv_px=uv, confidence=np.where(inside, score, 0.0),
                                         presence=score, handedness_score=p_side, world_m=world_m))
        return _drop_duplicate(hands)

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._graph.close()

    def __enter__(self) -> "MediaPipeHandBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_duplicate(hands: list[HandDetection2D]) -> list[HandDetection2D]:
    """Both wrists' crops caught the same hand (hands together, one hidden): keep the one whose own
    handedness agrees better with its side."""
    if len(hands) != 2:
        return hands
    a, b = hands
    size = max(0.5 * (a.size_px() + b.size_px()), 1.0)
    if np.linalg.norm(a.uv_px[_WRIST] - b.uv_px[_WRIST]) > 0.5 * size:
        return hands
    score = [h.handedness_score if np.isfinite(h.handedness_score) else 0.5 for h in hands]
    return [a] if score[0] >= score[1] else [b]


def lift_hand(hand: HandDetection2D, depth_m: np.ndarray | None, camera: PinholeCamera,
              config: LiftingConfig | None = None) -> Hand3D:
    """3D camera-frame hand keypoints: the body's `lift_keypoints`, palm as anchors."""
    config = config or hand_lifting_config()
    res = lift_keypoints(hand.uv_px, hand.confidence, hand.world_m, depth_m, camera, config,
                         anchor_indices=HAND21_PALM)
    return Hand3D(side=hand.side, positions_cam_m=res.points_cam_m, uv_px=hand.uv_px.copy(),
                  confidence=hand.confidence.copy(), source=res.source, presence=hand.presence,
                  handedness_score=hand.handedness_score)

