"""Synthetic RGB-D: Open3D ray-casting renderer, scene sampler, sensor noise."""
