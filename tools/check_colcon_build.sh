#!/usr/bin/env bash
# Check that `colcon build` of this package works the way a ROS 2 user runs it, using the
# PyPI ROS 2 wheels in a venv as the "ROS install" (ament_cmake, rosidl, rclpy, messages).
# Not part of CI. Runtime on the 2-core dev machine: about 2-3 minutes (the rosidl build of
# the interfaces is most of it), longer when the machine is busy.
#
#   tools/check_colcon_build.sh [VENV]        (VENV defaults to ./.venv)
#
# What it does, all outside the checkout (nothing in the repo or in VENV is changed):
#  1. clones the committed HEAD of this repo into $WS/src/pose_ros (uncommitted changes are
#     NOT built: commit first, or set POSE_ROS_COLCON_SRC=worktree to copy the working tree);
#  2. runs `colcon build --packages-select pose_ros` with AMENT_PREFIX_PATH/CMAKE_PREFIX_PATH
#     pointing at VENV, as /opt/ros/<distro>/setup.bash would for a real install;
#  3. makes a scratch Python that sees VENV's site-packages but NOT its .pth files, so the
#     editable checkout install and the venv-generated interfaces are invisible: everything
#     pose_ros must come from the colcon install space;
#  4. sources install/setup.bash and checks: imports (pose_ros, .msg, .srv, the nodes) resolve
#     into install/, the share dir (launch/config/meshes/msg/package.xml) is complete and found
#     through the ament index, one executable per node exists in lib/pose_ros, and the
#     `synthetic_camera` executable starts and publishes images + ground truth over DDS.
# The workspace is $POSE_ROS_COLCON_WS (default: a new /tmp/pose_ros_colcon.XXXXXX), kept
# afterwards for inspection; build output is in $WS/build.log. Extra colcon build arguments:
# POSE_ROS_COLCON_ARGS (e.g. "--symlink-install", also checked here).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
say() { echo "[colcon-check] $*"; }
fail() { echo "[colcon-check] FAIL: $*" >&2; exit 1; }

[[ -x "$PY" ]] || fail "no Python at $PY (pass the venv made by 'make setup' as the first argument)"
if [[ ! -x "$VENV/bin/colcon" ]]; then
  fail "colcon is not installed in $VENV; install it with:
  $PY -m pip install colcon-common-extensions==0.3.0 colcon-core==0.21.3 colcon-cmake==0.2.30 colcon-ros==0.5.0"
fi
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
SITE="$VENV/lib/python$PYVER/site-packages"

WS="${POSE_ROS_COLCON_WS:-$(mktemp -d /tmp/pose_ros_colcon.XXXXXX)}"
[[ "$WS" != "$ROOT"* ]] || fail "the workspace ($WS) must be outside the checkout"
rm -rf "$WS/src" "$WS/build" "$WS/install" "$WS/log" "$WS/pyenv"
mkdir -p "$WS/src"
if [[ "${POSE_ROS_COLCON_SRC:-head}" == "worktree" ]]; then
  say "copying the working tree (tracked + untracked, not ignored) to $WS/src/pose_ros"
  mkdir -p "$WS/src/pose_ros"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    xargs -0 cp --parents -t "$WS/src/pose_ros")
else
  say "cloning $(git -C "$ROOT" rev-parse --short HEAD) to $WS/src/pose_ros"
  git clone -q "$ROOT" "$WS/src/pose_ros"
fi

# The "ROS underlay": what sourcing /opt/ros/<distro>/setup.bash provides on a real install.
LIBS="$VENV/lib"
for d in "$SITE"/ros_*.libs; do [[ -d "$d" ]] && LIBS="$LIBS:$d"; done
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1   # the wheels' re-exec hook: paths are already set
export PATH="$VENV/bin:$PATH"
unset PYTHONPATH

say "colcon build --packages-select pose_ros ${POSE_ROS_COLCON_ARGS:+$POSE_ROS_COLCON_ARGS }(log: $WS/build.log)"
start=$(date +%s)
# shellcheck disable=SC2086  # POSE_ROS_COLCON_ARGS is a word list, e.g. "--symlink-install"
(cd "$WS" && colcon build --packages-select pose_ros --event-handlers console_direct+ ${POSE_ROS_COLCON_ARGS:-} \
  > "$WS/build.log" 2>&1) || { tail -40 "$WS/build.log"; fail "colcon build failed (full log: $WS/build.log)"; }
say "built in $(( $(date +%s) - start )) s"

# Scratch interpreter: same base Python, VENV's site-packages as a plain path entry (its .pth
# files, incl. the editable pose_ros and pose_ros_interfaces, are not processed).
BASE_PY="$("$PY" -c 'import sys; print(sys._base_executable)')"
"$BASE_PY" -m venv --without-pip "$WS/pyenv"
echo "$SITE" > "$WS/pyenv/lib/python$PYVER/site-packages/ros_underlay.pth"
export PATH="$WS/pyenv/bin:$PATH"   # `#!/usr/bin/env python3` in the node executables finds it
hash -r
[[ "$(command -v python3)" == "$WS/pyenv/bin/python3" ]] || fail "scratch python3 is not first on PATH"

cd "$WS"   # not the checkout: `python3 -` puts the working directory on sys.path
set +u
# shellcheck disable=SC1091
source "$WS/install/setup.bash"
set -u
INSTALL="$WS/install/pose_ros"

say "imports and share dir from the install space"
python3 - "$INSTALL" "$WS/src/pose_ros" <<'EOF'
import os
import sys
from pathlib import Path

# Paths are compared unresolved: with --symlink-install the installed files are symlinks
# into src/ and build/, but they are found through install/.
install, src = Path(sys.argv[1]), Path(sys.argv[2])
import pose_ros
import pose_ros.msg
import pose_ros.srv
import pose_ros.nodes.synthetic_camera_node
from pose_ros.msg import ObjectPoseArray, ObjectPose, HumanSkeletonArray
from pose_ros.srv import SetObjectEnabled
from pose_ros.resources import share_dir
from ament_index_python.packages import get_package_share_directory

def under_install(mod):
    return Path(os.path.abspath(mod.__file__)).is_relative_to(install)

for mod in (pose_ros, pose_ros.msg, pose_ros.srv, pose_ros.nodes.synthetic_camera_node):
    assert under_install(mod), f"{mod.__name__} imported from {mod.__file__}, not from {install}"
stray = [p for p in pose_ros.__path__ if not Path(os.path.abspath(p)).is_relative_to(install)]
assert not stray, f"pose_ros.__path__ reaches outside the install space: {stray}"
msg = ObjectPoseArray(objects=[ObjectPose(class_name="mug")])
assert msg.objects[0].class_name == "mug"
assert SetObjectEnabled.Request(class_name="*").class_name == "*"
share = Path(get_package_share_directory("pose_ros"))
assert share == install / "share" / "pose_ros", share
# resources.share_dir() prefers the checkout its own file resolves into: with --symlink-install
# that is the source package in src/ (same data files), otherwise the ament share directory.
assert share_dir() in (share, src.resolve()), f"resources.share_dir() = {share_dir()}, expected {share}"
for sub in ("launch", "config", "meshes", "msg", "srv", "package.xml"):
    assert (share / sub).exists(), f"missing {share / sub}"
launch = sorted(p.name for p in (share / "launch").glob("*.launch.py"))
configs = sorted(p.name for p in (share / "config").glob("*.yaml"))
meshes = sorted(p.parent.name for p in (share / "meshes").glob("*/object.yaml"))
assert launch and configs and meshes, (launch, configs, meshes)
nodes = sorted(p.name[:-len("_node.py")] for p in (src / "pose_ros" / "nodes").glob("*_node.py"))
exes = install / "lib" / "pose_ros"
missing = [n for n in nodes if not ((exes / n).is_file() and os.access(exes / n, os.X_OK))]
assert not missing, f"no executable in {exes} for node(s) {missing}"
print(f"  pose_ros from {Path(pose_ros.__file__).parent}")
print(f"  share {share}: launch {launch}, config {configs}, meshes {meshes}")
print(f"  executables in lib/pose_ros: {nodes}")
EOF

say "starting install/pose_ros/lib/pose_ros/synthetic_camera and listening for its topics"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 101 ))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
"$INSTALL/lib/pose_ros/synthetic_camera" --ros-args -p width:=160 -p height:=120 -p rate_hz:=5.0 \
  > "$WS/synthetic_camera.log" 2>&1 &
CAM_PID=$!
trap 'kill "$CAM_PID" 2>/dev/null || true' EXIT
python3 - "$CAM_PID" <<'EOF'
import os
import sys
import time

import rclpy
from sensor_msgs.msg import Image
from pose_ros.msg import ObjectPoseArray

cam_pid = int(sys.argv[1])
rclpy.init()
node = rclpy.create_node("colcon_check_listener")
got = {}
node.create_subscription(Image, "/camera/camera/color/image_raw",
                         lambda m: got.setdefault("color", (m.width, m.height, m.encoding)), 10)
node.create_subscription(ObjectPoseArray, "/camera/ground_truth/objects",
                         lambda m: got.setdefault("ground_truth", [p.class_name for p in m.objects]), 10)
deadline = time.monotonic() + 90.0
while len(got) < 2 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.2)
    try:
        os.kill(cam_pid, 0)
    except ProcessLookupError:
        sys.exit("synthetic_camera exited early (see synthetic_camera.log)")
node.destroy_node()
rclpy.shutdown()
if len(got) < 2:
    sys.exit(f"synthetic_camera published only {sorted(got)} within 90 s")
print(f"  received colour image {got['color']} and ground truth {got['ground_truth']}")
EOF
kill -INT "$CAM_PID" 2>/dev/null || true
wait "$CAM_PID" 2>/dev/null || true
trap - EXIT
say "OK: colcon build + install space verified (workspace kept at $WS)"
