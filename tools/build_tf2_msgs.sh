#!/usr/bin/env bash
# Kept for existing instructions: tf2_msgs/msg/TFMessage is now one of the standard interface packages
# that tools/build_std_interfaces.sh generates from tools/interfaces/<pkg>/ (same output and skip rules:
# .venv/tf2_msgs_interface, skipped where `import tf2_msgs` works).
#   tools/build_tf2_msgs.sh <venv>
set -euo pipefail
exec "$(cd "$(dirname "$0")" && pwd)/build_std_interfaces.sh" "${1:-$(cd "$(dirname "$0")/.." && pwd)/.venv}" tf2_msgs
