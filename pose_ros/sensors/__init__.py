"""Sensor access without ROS: RealSense devices, depth-to-colour registration, MCAP bags.

Modules are imported on demand (``pose_ros.sensors.realsense_device`` needs pyrealsense2,
``pose_ros.sensors.bag`` needs rclpy serialisation), so importing this package is free.
"""
