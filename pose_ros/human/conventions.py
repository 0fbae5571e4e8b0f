"""Keypoint naming conventions: BlazePose 33 (what MediaPipe outputs) and COCO 17 (what the
COCO benchmark and most downstream tools use).

Everything else in `pose_ros.human` indexes keypoints through these tables, so the order here
is the wire order of `HumanSkeleton.keypoints`.
"""
from __future__ import annotations

import numpy as np

BLAZEPOSE33 = "blazepose33"
COCO17 = "coco17"
CONVENTIONS = (BLAZEPOSE33, COCO17)

# Per-keypoint 3D source, mirrors msg/HumanKeypoint.msg SOURCE_* (plain ints: no rclpy here).
SOURCE_NONE = 0
SOURCE_DEPTH = 1
SOURCE_MODEL = 2

BLAZEPOSE33_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye_inner", "left_eye", "left_eye_outer",
    "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear",
    "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_pinky", "right_pinky",
    "left_index", "right_index",
    "left_thumb", "right_thumb",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
    "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)

COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye", "right_eye",
    "left_ear", "right_ear",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)

# COCO17_FROM_BLAZEPOSE33[i] = BlazePose index of COCO keypoint i (same names, subset).
COCO17_FROM_BLAZEPOSE33: np.ndarray = np.array(
    [BLAZEPOSE33_NAMES.index(name) for name in COCO17_NAMES], dtype=np.int64
)


def _edges(names: tuple[str, ...], pairs: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((names.index(a), names.index(b)) for a, b in pairs)


_LIMB_PAIRS = [
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
]

# Bones for drawing (index pairs into the convention's name list).
BLAZEPOSE33_EDGES = _edges(BLAZEPOSE33_NAMES, _LIMB_PAIRS + [
    ("nose", "left_eye_inner"), ("left_eye_inner", "left_eye"), ("left_eye", "left_eye_outer"),
    ("left_eye_outer", "left_ear"),
    ("nose", "right_eye_inner"), ("right_eye_inner", "right_eye"), ("right_eye", "right_eye_outer"),
    ("right_eye_outer", "right_ear"),
    ("mouth_left", "mouth_right"),
    ("left_wrist", "left_pinky"), ("left_wrist", "left_index"), ("left_wrist", "left_thumb"),
    ("left_pinky", "left_index"),
    ("right_wrist", "right_pinky"), ("right_wrist", "right_index"), ("right_wrist", "right_thumb"),
    ("right_pinky", "right_index"),
    ("left_ankle", "left_heel"), ("left_heel", "left_foot_index"), ("left_ankle", "left_foot_index"),
    ("right_ankle", "right_heel"), ("right_heel", "right_foot_index"),
    ("right_ankle", "right_foot_index"),
])

COCO17_EDGES = _edges(COCO17_NAMES, _LIMB_PAIRS + [
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "right_eye"),
    ("left_eye", "left_ear"), ("right_eye", "right_ear"),
    ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
])


def _lr_pairs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    pairs = []
    for i, name in enumerate(names):
        if name.startswith("left_"):
            pairs.append((i, names.index("right_" + name[len("left_"):])))
    return tuple(pairs)


# (left index, right index) pairs: for horizontal-flip augmentation and symmetry checks.
BLAZEPOSE33_LEFT_RIGHT = _lr_pairs(BLAZEPOSE33_NAMES)
COCO17_LEFT_RIGHT = _lr_pairs(COCO17_NAMES)
# mouth_left/mouth_right do not follow the left_ prefix rule.
BLAZEPOSE33_LEFT_RIGHT = BLAZEPOSE33_LEFT_RIGHT + (
    (BLAZEPOSE33_NAMES.index("mouth_left"), BLAZEPOSE33_NAMES.index("mouth_right")),
)

# COCO per-keypoint OKS falloff constants (sigmas), from the COCO keypoint evaluation.
COCO17_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
     0.89, 0.89], dtype=np.float64) / 10.0

# Torso keypoints (BlazePose indices): the most depth-reliable anchors for 3D lifting.
BLAZEPOSE33_TORSO = tuple(BLAZEPOSE33_NAMES.index(n) for n in
                          ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))


# Hands: the 21 keypoints of MediaPipe Hands, in its order (wire order of HumanHand.keypoints).
# Separate from CONVENTIONS: a hand is part of a skeleton, not a skeleton convention of its own.
HAND21 = "hand21"
HAND21_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_finger_mcp", "index_finger_pip", "index_finger_dip", "index_finger_tip",
    "middle_finger_mcp", "middle_finger_pip", "middle_finger_dip", "middle_finger_tip",
    "ring_finger_mcp", "ring_finger_pip", "ring_finger_dip", "ring_finger_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
HAND21_EDGES = _edges(HAND21_NAMES, [
    ("wrist", "thumb_cmc"), ("thumb_cmc", "thumb_mcp"), ("thumb_mcp", "thumb_ip"), ("thumb_ip", "thumb_tip"),
    ("wrist", "index_finger_mcp"), ("index_finger_mcp", "index_finger_pip"),
    ("index_finger_pip", "index_finger_dip"), ("index_finger_dip", "index_finger_tip"),
    ("index_finger_mcp", "middle_finger_mcp"), ("middle_finger_mcp", "middle_finger_pip"),
    ("middle_finger_pip", "middle_finger_dip"), ("middle_finger_dip", "middle_finger_tip"),
    ("middle_finger_mcp", "ring_finger_mcp"), ("ring_finger_mcp", "ring_finger_pip"),
    ("ring_finger_pip", "ring_finger_dip"), ("ring_finger_dip", "ring_finger_tip"),
    ("ring_finger_mcp", "pinky_mcp"), ("wrist", "pinky_mcp"), ("pinky_mcp", "pinky_pip"),
    ("pinky_pip", "pinky_dip"), ("pinky_dip", "pinky_tip"),
])
# Palm keypoints (wrist + the four knuckles): the rigid part of the hand, anchors for 3D lifting.
HAND21_PALM = tuple(HAND21_NAMES.index(n) for n in
                    ("wrist", "index_finger_mcp", "middle_finger_mcp", "ring_finger_mcp", "pinky_mcp"))
HAND_SIDES = ("left", "right")


class UnknownConventionError(ValueError):
    """A keypoint convention name that is not one of CONVENTIONS."""


def names_for(convention: str) -> tuple[str, ...]:
    """Keypoint names of a convention, in order."""
    if convention == BLAZEPOSE33:
        return BLAZEPOSE33_NAMES
    if convention == COCO17:
        return COCO17_NAMES
    raise UnknownConventionError(
        f"unknown keypoint convention {convention!r}: use one of {CONVENTIONS}")


def edges_for(convention: str) -> tuple[tuple[int, int], ...]:
    """Bones (index pairs) of a convention, for drawing."""
    names_for(convention)
    return BLAZEPOSE33_EDGES if convention == BLAZEPOSE33 else COCO17_EDGES


def blazepose_to_coco17(values: np.ndarray) -> np.ndarray:
    """Select the COCO-17 rows of any per-keypoint BlazePose array ((33, ...) -> (17, ...))."""
    values = np.asarray(values)
    if values.shape[0] != len(BLAZEPOSE33_NAMES):
        raise ValueError(
            f"expected {len(BLAZEPOSE33_NAMES)} BlazePose rows, got shape {values.shape}: "
            "pass the per-keypoint array in BlazePose-33 order")
    return values[COCO17_FROM_BLAZEPOSE33]
