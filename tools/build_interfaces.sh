#!/usr/bin/env bash
# Generate pose_ros's ROS interfaces (msg/, srv/) inside a venv that has the PyPI ROS 2
# wheels, using their own rosidl + ament_cmake. Idempotent: skips when the generated
# package is newer than every interface file.
#   tools/build_interfaces.sh <venv>
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
# Standard interfaces the PyPI wheels lack (tools/interfaces/<pkg>/: tf2_msgs for /tf and /tf_static,
# vision_msgs for ~/detections) where no ROS install provides them: separate, idempotent builds of their
# own (own build dirs and outputs), so they never touch pose_ros's below.
"$ROOT/tools/build_std_interfaces.sh" "$VENV"
# Generated Python goes beside, not into, site-packages: the source package `pose_ros`
# stays importable from the checkout and extends its __path__ to the generated part.
GEN_PY="$VENV/pose_ros_interfaces"
STAMP="$GEN_PY/.stamp"
if [[ -f "$STAMP" ]] && [[ -f "$GEN_PY/pose_ros/msg/__init__.py" ]] && [[ -z "$(find "$ROOT/msg" "$ROOT/srv" "$ROOT/CMakeLists.txt" -newer "$STAMP" -print -quit)" ]]; then
  echo "[interfaces] up to date ($GEN_PY)"
  exit 0
fi
BUILD="$ROOT/build/interfaces"
rm -rf "$BUILD" "$GEN_PY"
mkdir -p "$BUILD"
echo "[interfaces] generating pose_ros messages with rosidl (this takes ~1-2 min)"
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake -S "$ROOT" -B "$BUILD" \
  -DPOSE_ROS_INTERFACES_ONLY=ON \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPYTHON_INSTALL_DIR="pose_ros_interfaces" \
  -DPython3_EXECUTABLE="$PY" \
  -DBUILD_TESTING=OFF > "$BUILD/configure.log" 2>&1 || { tail -40 "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" > "$BUILD/build.log" 2>&1 || { grep -m20 -B2 -A8 -i "error" "$BUILD/build.log"; exit 1; }
cmake --install "$BUILD" > "$BUILD/install.log" 2>&1 || { tail -40 "$BUILD/install.log"; exit 1; }
# rosidl writes an empty pose_ros/__init__.py; the real one lives in the checkout. It also writes
# pose_ros-*.egg-info: pip would take that for an installed pose_ros and, on `pip install -e .`,
# "uninstall" it by deleting the generated files. Neither belongs here.
rm -f "$GEN_PY/pose_ros/__init__.py"
rm -rf "$GEN_PY"/pose_ros-*.egg-info
echo "$GEN_PY" > "$VENV/lib/python$PYVER/site-packages/pose_ros_interfaces.pth"
touch "$STAMP"
echo "[interfaces] done: $GEN_PY/pose_ros"
