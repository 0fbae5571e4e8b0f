"""One self-describing model file for the keypoint network (``torch.save`` of a plain dict).

Why one file: the node, the CLI and the benchmarks must agree on everything the weights depend on
(object list and order, the 3D keypoints the network was trained to point at, symmetries, input
size and normalisation). Storing them beside the weights makes a model usable without its
training setup, and the mesh geometry hash lets the loader refuse a mesh that differs from the
one the network was trained on (a wrong mesh gives confidently wrong poses, not an error).

Layout (``FORMAT_VERSION`` 1)::

    format: "pose_ros.keypoint_model"   format_version: 1
    objects: [{name, obj_id, keypoints_m (K+1,3), diameter_m, symmetry{discrete, continuous},
               mesh_source, mesh_hash,
               near_symmetries (optional: [4x4], geometric near-symmetries of that mesh)}]
                                                  # class id c (1-based) = objects[c-1]
    network: NetworkConfig dict                   input: {width, height, rgb_mean, rgb_std, depth}
    training: dict (command, settings)            metrics: [per-epoch dicts]
    progress: {epoch, step, images_seen, finished}
    state_dict: network weights                   optimizer / scheduler: optional (resume)
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT", "FORMAT_VERSION", "ModelFileError", "ModelMeshMismatchError", "ObjectSpec", "LoadedModel",
    "mesh_hash", "object_spec_from_model", "fill_near_symmetries", "near_symmetries_for", "save_model_file",
    "load_model_file", "check_meshes",
]

FORMAT = "pose_ros.keypoint_model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """The model file is missing, unreadable or not a valid pose_ros keypoint model."""


class ModelMeshMismatchError(ModelFileError):
    """A supplied mesh differs from the mesh the network was trained on."""


@dataclass
class ObjectSpec:
    """What the estimator needs to know about one trained class (no mesh required)."""

    name: str
    obj_id: int
    keypoints_m: np.ndarray           # (K+1,3), last = bbox centre
    diameter_m: float
    symmetry_discrete: list[np.ndarray] = field(default_factory=list)
    symmetry_continuous: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    mesh_source: str = ""
    mesh_hash: str = ""
    near_symmetries: list[np.ndarray] | None = None   # of the mesh with ``mesh_hash``; None: not computed

    @property
    def is_symmetric(self) -> bool:
        return bool(self.symmetry_discrete or self.symmetry_continuous)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "obj_id": int(self.obj_id), "keypoints_m": np.asarray(self.keypoints_m).tolist(),
                "diameter_m": float(self.diameter_m),
                "symmetry": {"discrete": [np.asarray(S).tolist() for S in self.symmetry_discrete],
                             "continuous": [[np.asarray(a).tolist(), np.asarray(o).tolist()]
                                            for a, o in self.symmetry_continuous]},
                "mesh_source": self.mesh_source, "mesh_hash": self.mesh_hash,
                **({} if self.near_symmetries is None else
                   {"near_symmetries": [np.asarray(S).tolist() for S in self.near_symmetries]})}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "ObjectSpec":
        try:
            kp = np.asarray(d["keypoints_m"], dtype=np.float64)
            sym = d.get("symmetry") or {}
            spec = cls(name=str(d["name"]), obj_id=int(d["obj_id"]), keypoints_m=kp,
                       diameter_m=float(d["diameter_m"]),
                       symmetry_discrete=[np.asarray(S, dtype=np.float64) for S in sym.get("discrete", [])],
                       symmetry_continuous=[(np.asarray(a, dtype=np.float64), np.asarray(o, dtype=np.float64))
                                            for a, o in sym.get("continuous", [])],
                       mesh_source=str(d.get("mesh_source", "")), mesh_hash=str(d.get("mesh_hash", "")),
                       near_symmetries=None if d.get("near_symmetries") is None else
                       [np.asarray(S, dtype=np.float64) for S in d["near_symmetries"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{where}: malformed object entry ({exc!r}); re-export the model with pose-ros train") from exc
        if kp.ndim != 2 or kp.shape[1] != 3 or not np.isfinite(kp).all():
            raise ModelFileError(f"{where}: object {spec.name!r} keypoints_m must be finite (K+1,3); got {kp.shape}")
        if not spec.diameter_m > 0:
            raise ModelFileError(f"{where}: object {spec.name!r} has diameter_m={spec.diameter_m}")
        if spec.near_symmetries is not None and any(S.shape != (4, 4) or not np.isfinite(S).all()
                                                    for S in spec.near_symmetries):
            raise ModelFileError(f"{where}: object {spec.name!r} near_symmetries must be finite 4x4 transforms")
        return spec

    def symmetry_transforms(self, continuous_steps: int = 36) -> list[np.ndarray]:
        """All symmetry transforms incl. identity (same construction as ObjectSymmetry)."""
        from pose_ros.core.object_model import ObjectSymmetry

        return ObjectSymmetry(list(self.symmetry_discrete), list(self.symmetry_continuous)).transforms(continuous_steps)


def mesh_hash(mesh: Any) -> str:
    """Geometry hash of a metre mesh: vertices rounded to 0.1 mm + faces (units/format independent)."""
    v = np.round(np.asarray(mesh.vertices, dtype=np.float64) * 1e4).astype(np.int64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(v).tobytes())
    h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()[:16]


def object_spec_from_model(model: Any, mesh_source: str = "", with_near_symmetries: bool = False) -> ObjectSpec:
    """ObjectSpec from a core ObjectModel (keypoints, diameter, symmetry, mesh hash).

    ``with_near_symmetries`` also stores the mesh's geometric near-symmetries (1-2 s per mesh), so
    an estimator loading the file does not compute them again at start-up.
    """
    sym = model.symmetry
    spec = ObjectSpec(name=model.name, obj_id=int(model.obj_id), keypoints_m=np.asarray(model.keypoints_m, float),
                      diameter_m=float(model.diameter_m),
                      symmetry_discrete=[np.asarray(S, float) for S in sym.discrete],
                      symmetry_continuous=[(np.asarray(a, float), np.asarray(o, float)) for a, o in sym.continuous],
                      mesh_source=mesh_source, mesh_hash=mesh_hash(model.mesh))
    if with_near_symmetries:
        fill_near_symmetries([spec], [model])
    return spec


def fill_near_symmetries(specs: list[ObjectSpec], models: list[Any]) -> None:
    """Compute the missing ``near_symmetries`` of specs whose mesh (matched by name, same hash) is given."""
    from pose_ros.objects.near_symmetry import near_symmetries

    by_name = {m.name: m for m in models}
    for spec in specs:
        m = by_name.get(spec.name)
        if spec.near_symmetries is None and m is not None and mesh_hash(m.mesh) == spec.mesh_hash:
            spec.near_symmetries = near_symmetries(m)


def near_symmetries_for(spec: ObjectSpec, model: Any) -> list[np.ndarray]:
    """The spec's stored near-symmetries when they belong to this mesh, else computed now."""
    from pose_ros.objects.near_symmetry import near_symmetries

    if spec.near_symmetries is not None and spec.mesh_hash and mesh_hash(model.mesh) == spec.mesh_hash:
        return [np.array(S) for S in spec.near_symmetries]
    return near_symmetries(model)


@dataclass
class LoadedModel:
    path: Path
    network: Any                     # KeypointNet in eval mode
    config: Any                      # NetworkConfig
    objects: list[ObjectSpec]
    raw: dict[str, Any]              # the whole dict (training, metrics, progress, optimizer...)

    @property
    def class_names(self) -> list[str]:
        return [o.name for o in self.objects]

    def class_id(self, name_or_obj_id: str | int) -> int:
        """1-based class id for an object name or obj_id; ValueError listing the known ones."""
        for i, o in enumerate(self.objects):
            if o.name == name_or_obj_id or (isinstance(name_or_obj_id, (int, np.integer)) and o.obj_id == name_or_obj_id):
                return i + 1
        raise ValueError(f"unknown object {name_or_obj_id!r}; this model knows "
                         f"{[(o.name, o.obj_id) for o in self.objects]}")


def save_model_file(path: str | Path, network: Any, objects: list[ObjectSpec], training: dict | None = None,
                    metrics: list[dict] | None = None, progress: dict | None = None,
                    optimizer_state: dict | None = None, scheduler_state: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write atomically (tmp + rename) so an interrupted save never leaves a broken file."""
    import torch

    from pose_ros.objects.network import DEPTH_REL_SCALE_M, RGB_MEAN, RGB_STD

    cfg = network.config
    if len(objects) != cfg.num_classes:
        raise ValueError(f"{len(objects)} objects but the network has {cfg.num_classes} classes")
    d: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "objects": [o.to_dict() for o in objects],
        "network": cfg.to_dict(),
        "input": {"width": cfg.input_width, "height": cfg.input_height, "rgb_mean": list(RGB_MEAN),
                  "rgb_std": list(RGB_STD), "depth": "relative_to_median" if cfg.use_depth else "none",
                  "depth_scale_m": DEPTH_REL_SCALE_M, "resize": "letterbox_keep_aspect"},
        "training": dict(training or {}), "metrics": list(metrics or []),
        "progress": dict(progress or {}),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    if optimizer_state is not None:
        d["optimizer"] = optimizer_state
    if scheduler_state is not None:
        d["scheduler"] = scheduler_state
    if extra:
        d.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(d, tmp)
    os.replace(tmp, path)
    return path


def store_in_model_file(path: str | Path, key: str, value: Any) -> None:
    """Add or replace one top-level entry of a model file (atomically), e.g. its score calibration."""
    import torch

    path = Path(path)
    d = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a pose_ros model file")
    d[key] = value
    tmp = path.with_name(path.name + ".tmp")
    torch.save(d, tmp)
    os.replace(tmp, path)


def load_model_file(path: str | Path, device: str = "cpu", meshes: list[Any] | None = None,
                    allow_mesh_mismatch: bool = False) -> LoadedModel:
    """Load and validate a model file; optionally check supplied ObjectModels against it."""
    import torch

    from pose_ros.objects.network import KeypointNet, NetworkConfig

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}; train one with `pose-ros train` or pass the "
                             "shipped models/demo_objects.pt")
    try:
        d = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise ModelFileError(f"{path}: not a readable torch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a pose_ros keypoint model (format={d.get('format') if isinstance(d, dict) else type(d).__name__!r}); "
                             "use a file written by `pose-ros train`")
    ver = d.get("format_version")
    if ver != FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format_version {ver} is not supported (this pose_ros reads {FORMAT_VERSION}); "
                             "re-train or re-export the model with this version")
    for key in ("objects", "network", "state_dict"):
        if key not in d:
            raise ModelFileError(f"{path}: missing '{key}'; the file is incomplete (interrupted save?)")
    objects = [ObjectSpec.from_dict(o, f"{path}: objects[{i}]") for i, o in enumerate(d["objects"])]
    try:
        cfg = NetworkConfig.from_dict(d["network"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid network config ({exc})") from exc
    if cfg.num_classes != len(objects):
        raise ModelFileError(f"{path}: network has {cfg.num_classes} classes but {len(objects)} objects are listed")
    kps = {len(o.keypoints_m) for o in objects}
    if kps != {cfg.num_keypoints}:
        raise ModelFileError(f"{path}: objects have {sorted(kps)} keypoints but the network predicts {cfg.num_keypoints}")
    net = KeypointNet(cfg)
    try:
        net.load_state_dict(d["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the network config ({str(exc)[:300]})") from exc
    net.eval().to(device)
    loaded = LoadedModel(path, net, cfg, objects, d)
    if meshes is not None:
        check_meshes(loaded, meshes, allow_mismatch=allow_mesh_mismatch)
    return loaded


def check_meshes(loaded: LoadedModel, meshes: list[Any], allow_mismatch: bool = False) -> dict[int, Any]:
    """Match ObjectModels to the trained classes by name/obj_id and compare mesh hashes.

    Returns {class_id: ObjectModel}. Raises ModelMeshMismatchError (unless ``allow_mismatch``) when
    a mesh's geometry differs from the training mesh; classes without a mesh are simply absent.
    """
    import logging

    out: dict[int, Any] = {}
    by_name = {m.name: m for m in meshes}
    by_id = {int(m.obj_id): m for m in meshes}
    for i, spec in enumerate(loaded.objects):
        m = by_name.get(spec.name) or by_id.get(spec.obj_id)
        if m is None:
            continue
        h = mesh_hash(m.mesh)
        if spec.mesh_hash and h != spec.mesh_hash:
            msg = (f"mesh for {spec.name!r} (obj_id {spec.obj_id}) differs from the one the model was trained on "
                   f"(hash {h} != {spec.mesh_hash}, trained from {spec.mesh_source or 'unknown'}); "
                   "pass the training mesh or retrain the model")
            if not allow_mismatch:
                raise ModelMeshMismatchError(msg)
            logging.getLogger(__name__).warning(msg)
        out[i + 1] = m
    return out
