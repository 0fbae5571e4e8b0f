"""Thin rclpy nodes: parameters, topics, QoS, conversions. No algorithms here.

Importing this package limits NumPy's BLAS to one thread in the process unless the user set a
thread count (`blas_threads`): every node process imports it before NumPy.
"""
from pose_ros.nodes.blas_threads import limit_blas_threads

limit_blas_threads()
