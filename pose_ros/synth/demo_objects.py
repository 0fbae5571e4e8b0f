"""Procedural demo objects (mug, patterned box, bottle) with vertex-colour textures, in metres.

Why procedural: the project ships only what it makes itself, and a generator is reproducible and
tiny. Model frame for all three: origin at the centre of the bottom (the face it stands on),
+z up the object's axis; the mug handle points to +x; the box is 15 (x) x 10 (y) x 5 (z) cm.
Colour is stored per vertex, so surfaces are subdivided finely enough (2.5-5 mm) for the
patterns to survive interpolation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import trimesh

__all__ = ["DemoObject", "make_mug", "make_box", "make_bottle", "demo_objects", "write_demo_objects",
           "lathe"]

ColorFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (theta, z, r) -> (N,3) float


@dataclass
class DemoObject:
    name: str
    obj_id: int
    mesh: trimesh.Trimesh
    symmetry: dict | None  # object.yaml symmetry block (metres) or None
    description: str


def _resample(profile: np.ndarray, step_m: float) -> np.ndarray:
    """Insert points along a (r,z) polyline so no segment is longer than step_m (keeps corners)."""
    out = [profile[0]]
    for a, b in zip(profile[:-1], profile[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_m)))
        for k in range(1, n + 1):
            out.append(a + (b - a) * k / n)
    return np.asarray(out)


def lathe(profile_rz: np.ndarray, sections: int, color_fn: ColorFn) -> trimesh.Trimesh:
    """Surface of revolution about +z of an (r,z) polyline, vertex colours from color_fn.

    Profile rows with r == 0 collapse to one axis vertex so there are no degenerate triangles.
    Faces wind so that normals point away from the axis for a profile walked bottom-up outside.
    """
    prof = np.asarray(profile_rz, dtype=np.float64)
    theta = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    verts, cols, rows = [], [], []
    for r, z in prof:
        start = sum(len(v) for v in verts)
        if r <= 1e-9:
            v = np.array([[0.0, 0.0, z]])
            c = color_fn(np.zeros(1), np.array([z]), np.zeros(1))
        else:
            v = np.stack([r * np.cos(theta), r * np.sin(theta), np.full(sections, z)], axis=1)
            c = color_fn(theta, np.full(sections, z), np.full(sections, r))
        verts.append(v)
        cols.append(c)
        rows.append((start, len(v)))
    faces = []
    for (s0, n0), (s1, n1) in zip(rows[:-1], rows[1:]):
        for j in range(sections):
            jn = (j + 1) % sections
            a0, a1 = s0 + (j if n0 > 1 else 0), s0 + (jn if n0 > 1 else 0)
            b0, b1 = s1 + (j if n1 > 1 else 0), s1 + (jn if n1 > 1 else 0)
            if a0 != a1:
                faces.append([a0, a1, b0])
            if b0 != b1:
                faces.append([a1, b1, b0])
    V = np.concatenate(verts)
    C = np.clip(np.concatenate(cols), 0, 1)
    F = np.asarray(faces, dtype=np.int64)
    rgba = np.concatenate([(C * 255 + 0.5).astype(np.uint8), np.full((len(C), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(V, F, vertex_colors=rgba, process=False)


def _tube(center_xyz: np.ndarray, radius_m: float, sections: int, color: np.ndarray) -> trimesh.Trimesh:
    """Open tube of circular cross-section swept along a polyline (for the mug handle)."""
    c = np.asarray(center_xyz)
    tang = np.gradient(c, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    side = np.array([0.0, 1.0, 0.0])  # the handle lies in the xz plane, so y is always normal
    verts = []
    ang = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    for p, t in zip(c, tang):
        n = np.cross(side, t)
        n /= np.linalg.norm(n)
        ring = p + radius_m * (np.cos(ang)[:, None] * n + np.sin(ang)[:, None] * side)
        verts.append(ring)
    V = np.concatenate(verts)
    F = []
    for i in range(len(c) - 1):
        for j in range(sections):
            jn = (j + 1) % sections
            a0, a1 = i * sections + j, i * sections + jn
            b0, b1 = a0 + sections, a1 + sections
            F += [[a0, b0, a1], [a1, b0, b1]]
    rgba = np.tile(np.append((np.asarray(color) * 255 + 0.5).astype(np.uint8), 255), (len(V), 1))
    return trimesh.Trimesh(V, np.asarray(F), vertex_colors=rgba, process=False)


def _concat(meshes: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    V, F, C, off = [], [], [], 0
    for m in meshes:
        V.append(np.asarray(m.vertices))
        F.append(np.asarray(m.faces) + off)
        C.append(np.asarray(m.visual.vertex_colors))
        off += len(m.vertices)
    return trimesh.Trimesh(np.concatenate(V), np.concatenate(F), vertex_colors=np.concatenate(C), process=False)


# ---------------------------------------------------------------------------- mug
def make_mug() -> DemoObject:
    """Mug 9.5 cm tall, 8 cm across, 5 mm wall, C-handle at +x. No symmetry (handle)."""
    R_out, R_in, H, floor = 0.040, 0.035, 0.095, 0.006
    profile = _resample(np.array([[0.0, 0.0], [R_out - 0.003, 0.0], [R_out, 0.003], [R_out, H],
                                  [R_in, H], [R_in, floor], [0.0, floor]]), 0.003)
    base = np.array([0.10, 0.22, 0.55])   # deep blue glaze
    band = np.array([0.95, 0.80, 0.15])   # yellow wave band
    dot = np.array([0.95, 0.95, 0.92])
    inner = np.array([0.92, 0.92, 0.88])

    def color(theta: np.ndarray, z: np.ndarray, r: np.ndarray) -> np.ndarray:
        out = np.tile(base, (len(z), 1))
        outside = r > R_in + 1e-6
        wave = 0.045 + 0.012 * np.sin(3 * theta) + 0.004 * np.sin(7 * theta + 1.0)
        in_band = outside & (np.abs(z - wave) < 0.008)
        out[in_band] = band
        # Dots of growing size around the mug: an angle-dependent pattern (no symmetry).
        k = np.floor(theta / (2 * np.pi / 12))
        centre_t = (k + 0.5) * (2 * np.pi / 12)
        rad = 0.004 + 0.0006 * k
        d = np.hypot((theta - centre_t) * R_out, z - 0.077)
        out[outside & (d < rad)] = dot
        out[~outside & (z > floor + 1e-6)] = inner
        out[~outside & (z <= floor + 1e-6) & (r < R_in)] = inner * 0.95
        return out

    body = lathe(profile, 96, color)
    # Handle: half-ellipse centreline in the xz plane, ends buried in the wall.
    phi = np.linspace(-np.pi / 2 * 0.9, np.pi / 2 * 0.9, 24)
    centre = np.stack([R_out - 0.004 + 0.030 * np.cos(phi), np.zeros_like(phi), 0.050 + 0.030 * np.sin(phi)], axis=1)
    handle = _tube(centre, 0.0055, 16, base)
    return DemoObject("mug", 1, _concat([body, handle]), None,
                      "ceramic mug, 9.5 cm tall, 8 cm diameter, handle towards +x; no symmetry")


# ---------------------------------------------------------------------------- box
def _face_image(size_mm: tuple[int, int], seed: int, text: str) -> np.ndarray:
    """A deterministic asymmetric print (mm pixels): colour field, off-centre disc, stripe, text."""
    w, h = size_mm
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (rng.uniform(60, 230, 3)).astype(np.uint8)
    cv2.rectangle(img, (0, 0), (w // 3, h // 4), tuple(int(c) for c in rng.uniform(0, 255, 3)), -1)
    cv2.circle(img, (int(w * 0.75), int(h * 0.7)), max(4, min(w, h) // 5), tuple(int(c) for c in rng.uniform(0, 255, 3)), -1)
    cv2.line(img, (0, h - 1), (w // 2, h // 3), (20, 20, 20), max(2, min(w, h) // 12))
    scale = min(w / (22 * max(1, len(text))), h / 30)
    cv2.putText(img, text, (int(w * 0.08), int(h * 0.55)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (250, 250, 250), max(2, int(scale * 3)), cv2.LINE_AA)
    return img


def _grid_face(origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, nx: int, ny: int,
               image: np.ndarray) -> trimesh.Trimesh:
    """A subdivided rectangle origin + s*ex + t*ey, s,t in [0,1]; normal = ex x ey.

    The print is sampled with image column = s and image row = 1 - t (so it reads upright).
    """
    s, t = np.meshgrid(np.linspace(0, 1, nx + 1), np.linspace(0, 1, ny + 1))
    V = origin + s.reshape(-1, 1) * ex + t.reshape(-1, 1) * ey
    h, w = image.shape[:2]
    col = image[np.clip(((1 - t) * (h - 1)).round().astype(int), 0, h - 1),
                np.clip((s * (w - 1)).round().astype(int), 0, w - 1)].reshape(-1, 3)
    F = []
    for j in range(ny):
        for i in range(nx):
            a = j * (nx + 1) + i
            b, c, d = a + 1, a + nx + 1, a + nx + 2
            F += [[a, b, d], [a, d, c]]
    rgba = np.concatenate([col, np.full((len(col), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(V, np.asarray(F), vertex_colors=rgba, process=False)


def make_box() -> DemoObject:
    """Cereal-style box 15x10x5 cm with a different asymmetric print on every face; no symmetry."""
    L, W, H = 0.15, 0.10, 0.05
    step = 0.004
    x0, y0 = -L / 2, -W / 2
    ex, ey, ez = np.array([L, 0, 0.0]), np.array([0, W, 0.0]), np.array([0, 0, H])
    faces_spec = [  # origin, u-edge, v-edge (u x v = outward normal), text, seed
        (np.array([x0, y0, H]), ex, ey, "POSE", 1),           # top +z
        (np.array([x0, -y0, 0]), ex, -ey, "ROS", 2),          # bottom -z
        (np.array([x0, y0, 0]), ex, ez, "A1", 3),             # front -y
        (np.array([-x0, -y0, 0]), -ex, ez, "B2", 4),          # back +y
        (np.array([-x0, y0, 0]), ey, ez, "C", 5),             # right +x
        (np.array([x0, -y0, 0]), -ey, ez, "D", 6),            # left -x
    ]
    parts = []
    for origin, u, v, text, seed in faces_spec:
        lu, lv = np.linalg.norm(u), np.linalg.norm(v)
        img = _face_image((int(round(lu * 1000)), int(round(lv * 1000))), seed, text)
        parts.append(_grid_face(origin, u, v, int(round(lu / step)), int(round(lv / step)), img))
    return DemoObject("box", 2, _concat(parts), None,
                      "printed box 15x10x5 cm, distinct asymmetric print per face; no symmetry")


# ---------------------------------------------------------------------------- bottle
def make_bottle() -> DemoObject:
    """Bottle 22 cm tall (body 6.6 cm diameter, neck, cap). Colours depend only on height, so it
    has a continuous symmetry about its z axis."""
    R, Rn, Rc = 0.033, 0.0135, 0.0155
    profile = _resample(np.array([[0.0, 0.0], [R - 0.004, 0.0], [R, 0.004], [R, 0.135]]), 0.004)
    shoulder = np.array([[Rn + (R - Rn) * (0.5 + 0.5 * np.cos(a)), 0.135 + 0.045 * a / np.pi]
                         for a in np.linspace(0, np.pi, 14)[1:]])
    rest = _resample(np.array([[Rn, 0.18], [Rn, 0.195], [Rc, 0.195], [Rc, 0.2175], [Rc - 0.0025, 0.22],
                               [0.0, 0.22]]), 0.004)[1:]
    profile = np.concatenate([profile, shoulder, rest])
    glass = np.array([0.20, 0.55, 0.35])
    label = np.array([0.93, 0.90, 0.80])
    stripe = np.array([0.75, 0.10, 0.12])
    cap = np.array([0.85, 0.15, 0.10])

    def color(theta: np.ndarray, z: np.ndarray, r: np.ndarray) -> np.ndarray:
        out = np.tile(glass, (len(z), 1))
        lab = (z > 0.04) & (z < 0.115) & (r > R - 1e-6)
        out[lab] = label
        out[lab & (np.abs(z - 0.06) < 0.005)] = stripe
        out[lab & (np.abs(z - 0.095) < 0.0025)] = stripe * 0.4
        out[z >= 0.195 - 1e-6] = cap
        return out

    mesh = lathe(profile, 72, color)
    sym = {"continuous": [{"axis": [0.0, 0.0, 1.0], "offset": [0.0, 0.0, 0.0]}]}
    return DemoObject("bottle", 3, mesh, sym,
                      "bottle 22 cm tall with label band and cap; continuous symmetry about +z")


def demo_objects() -> list[DemoObject]:
    """The three demo objects, deterministic."""
    return [make_mug(), make_box(), make_bottle()]


def write_demo_objects(out_dir: str | Path) -> list[Path]:
    """Write meshes/<name>/<name>.ply (binary, vertex colours) + object.yaml; returns the dirs."""
    import yaml

    out = Path(out_dir)
    written = []
    for obj in demo_objects():
        d = out / obj.name
        d.mkdir(parents=True, exist_ok=True)
        ply = d / f"{obj.name}.ply"
        ply.write_bytes(trimesh.exchange.ply.export_ply(obj.mesh, encoding="binary", vertex_normal=False))
        info: dict = {"name": obj.name, "obj_id": obj.obj_id, "mesh": ply.name, "units": "m",
                      "description": obj.description}
        if obj.symmetry:
            info["symmetry"] = obj.symmetry
        (d / "object.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
        written.append(d)
    return written
