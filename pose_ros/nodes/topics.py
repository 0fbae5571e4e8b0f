"""Default topic names: realsense-ros (>= 4.54) names, so a real camera drops in unchanged."""

COLOR_TOPIC = "/camera/camera/color/image_raw"
DEPTH_TOPIC = "/camera/camera/aligned_depth_to_color/image_raw"
INFO_TOPIC = "/camera/camera/color/camera_info"
GROUND_TRUTH_TOPIC = "/camera/ground_truth/objects"

COLOR_OPTICAL_FRAME = "camera_color_optical_frame"
DEPTH_OPTICAL_FRAME = "camera_depth_optical_frame"
