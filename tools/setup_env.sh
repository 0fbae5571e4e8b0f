#!/usr/bin/env bash
# Set up everything pose_ros needs in ./.venv, idempotently: Debian packages, a Python 3.11
# venv with the pinned requirements (ROS 2 Kilted wheels included), this package's ROS
# interfaces, and the package itself (editable). Each step is skipped when already done.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages: open3d needs libusb; pyrealsense2 too.
if ! ldconfig -p 2>/dev/null | grep "libusb-1.0.so.0" >/dev/null; then  # not -q: early exit + pipefail
  say "installing Debian package libusb-1.0-0"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  fi
fi

# 2. Python 3.11 venv (the ROS 2 Kilted wheels are built for CPython 3.11).
PYTHON="${POSE_ROS_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$cand"; break
    fi
  done
fi
[[ -n "$PYTHON" ]] || { echo "pose_ros needs Python 3.11 (the ROS 2 Kilted wheels' version)"; exit 1; }
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip wheel "setuptools<80" 2>&1 | grep -v "^WARNING: Location" || true
fi

# 3. Pinned requirements (skipped while requirements.txt is unchanged).
REQ_STAMP="$VENV/.requirements.stamp"
if [[ ! -f "$REQ_STAMP" ]] || ! cmp -s "$ROOT/requirements.txt" "$REQ_STAMP"; then
  say "installing pinned Python requirements (first time: several minutes)"
  "$VENV/bin/python" -m pip install --progress-bar off -r "$ROOT/requirements.txt" 2>&1 \
    | grep -vE "^(WARNING: Location|Requirement already satisfied)" | grep -E "^(Collecting|Successfully|ERROR)" || true
  "$VENV/bin/python" -c "import rclpy, open3d, cv2, torch, mediapipe, trimesh, pyrealsense2" \
    || { echo "requirements did not import; see pip output above"; exit 1; }
  cp "$ROOT/requirements.txt" "$REQ_STAMP"
fi

# 4. This package's ROS interfaces (msg/, srv/) with rosidl from the wheels.
"$ROOT/tools/build_interfaces.sh" "$VENV"

# 5. The package itself, editable so the checkout is what runs.
if [[ ! -x "$VENV/bin/pose-ros" ]] || [[ "$ROOT/setup.py" -nt "$VENV/bin/pose-ros" ]]; then
  say "installing pose_ros (editable) into the venv"
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" \
    --config-settings editable_mode=compat 2>&1 | grep -E "^(ERROR|error)" || true
  touch "$VENV/bin/pose-ros"
fi
say "ready: $VENV (activate with: source .venv/bin/activate)"
