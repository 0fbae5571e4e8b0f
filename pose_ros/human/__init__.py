"""Human keypoints, 3D lifting, filtering, robot kinematics, retargeting, safety."""
