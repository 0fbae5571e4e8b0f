"""BOP results CSV: ``scene_id,im_id,obj_id,score,R,t,time``.

Why: the BOP toolkit and leaderboard read exactly this format, so our estimates can be scored
by the official tools as well as by ``pose_metrics``. ``R`` is the 3x3 model->camera rotation,
row-major, 9 space-separated floats; ``t`` is in millimetres, 3 space-separated floats; ``time``
is seconds per image (-1 when unknown; BOP requires the same value for all estimates of an image).
In memory we use metres (``T_cam_obj``); millimetres exist only in the file.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["BopEstimate", "write_bop_results", "read_bop_results", "BopResultsError", "HEADER"]

HEADER = ("scene_id", "im_id", "obj_id", "score", "R", "t", "time")


class BopResultsError(ValueError):
    """Malformed results file or estimate; the message gives the file/line and the fix."""


@dataclass
class BopEstimate:
    scene_id: int
    im_id: int
    obj_id: int
    score: float
    T_cam_obj: np.ndarray   # 4x4, metres
    time_s: float = -1.0


def _fmt(x: float) -> str:
    return repr(float(x))  # shortest round-trip representation


def write_bop_results(path: str | Path, estimates: Iterable[BopEstimate]) -> Path:
    """Write estimates to ``path`` (parent folders created). Non-finite poses/scores raise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, e in enumerate(estimates):
        T = np.asarray(e.T_cam_obj, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise BopResultsError(f"estimate {i} (scene {e.scene_id}, im {e.im_id}, obj {e.obj_id}): "
                                  f"T_cam_obj must be a finite 4x4; got shape {T.shape}")
        if not math.isfinite(float(e.score)):
            raise BopResultsError(f"estimate {i}: score must be finite; got {e.score}")
        R = " ".join(_fmt(v) for v in T[:3, :3].ravel())
        t = " ".join(_fmt(v * 1000.0) for v in T[:3, 3])
        rows.append([int(e.scene_id), int(e.im_id), int(e.obj_id), _fmt(e.score), R, t, _fmt(e.time_s)])
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)
    return path


def read_bop_results(path: str | Path) -> list[BopEstimate]:
    """Parse a BOP results CSV back into metre poses; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise BopResultsError(f"results file not found: {path}")
    out: list[BopEstimate] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise BopResultsError(f"{path}: first line must be the header {','.join(HEADER)}; got {header}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(HEADER):
                raise BopResultsError(f"{path}:{lineno}: expected {len(HEADER)} fields; got {len(row)}")
            try:
                R = np.array([float(v) for v in row[4].split()], dtype=np.float64)
                t = np.array([float(v) for v in row[5].split()], dtype=np.float64)
                scene_id, im_id, obj_id = int(row[0]), int(row[1]), int(row[2])
                score, time_s = float(row[3]), float(row[6])
            except ValueError as exc:
                raise BopResultsError(f"{path}:{lineno}: non-numeric field ({exc})") from exc
            if R.size != 9 or t.size != 3:
                raise BopResultsError(f"{path}:{lineno}: R needs 9 and t 3 space-separated numbers; "
                                      f"got {R.size} and {t.size}")
            T = np.eye(4)
            T[:3, :3] = R.reshape(3, 3)
            T[:3, 3] = t * 1e-3
            out.append(BopEstimate(scene_id, im_id, obj_id, score, T, time_s))
    return out
