"""Where the package's data files (config/, meshes/, models/, launch/) live.

In a checkout or an editable venv install they are beside the `pose_ros` source package; after
`colcon build` they are in the ament share directory. Callers ask here instead of guessing.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PACKAGE = "pose_ros"


@lru_cache(maxsize=1)
def share_dir() -> Path:
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "package.xml").exists() and (checkout / "config").is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception as exc:  # not installed through ament either
        raise FileNotFoundError(
            f"cannot find pose_ros data files (config/, meshes/): not in a checkout ({checkout}) "
            "and not in an ament share directory; source your ROS workspace or reinstall") from exc


def config_dir() -> Path:
    return share_dir() / "config"


def meshes_dir() -> Path:
    return share_dir() / "meshes"


def models_dir() -> Path:
    return share_dir() / "models"


def resolve(path: str | Path) -> Path:
    """A user path as given if it exists, else relative to the package share directory."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    candidate = share_dir() / p
    return candidate if candidate.exists() else p
