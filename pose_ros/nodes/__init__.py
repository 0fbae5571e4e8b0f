"""Thin rclpy nodes: parameters, topics, QoS, conversions. No algorithms here."""
