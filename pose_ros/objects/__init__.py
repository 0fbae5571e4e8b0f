"""Object 6DoF pose: keypoint network, voting, PnP, ICP, scoring, tracking, training."""
