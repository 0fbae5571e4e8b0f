"""URDF parser, kinematics and mapping validation on our humanoid and the real Unitree G1 URDF."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_data_path

from pose_ros.human.kinematics import KinematicTree, PointRef, all_link_poses
from pose_ros.human.retarget_mapping import MappingError, load_mapping
from pose_ros.human.urdf_model import UrdfError, default_urdf_path, load_urdf, parse_urdf_string

ROBOTS = REPO_ROOT / "config" / "robots"


def g1_urdf() -> Path:
    return shared_data_path("robots", "unitree_g1", "g1_custom_collision_29dof.urdf")


def test_our_humanoid_structure_and_limits():
    m = load_urdf(default_urdf_path())
    assert m.name == "pose_ros_humanoid" and m.root == "base_link"
    names = m.actuated_joint_names
    assert len(names) == 28
    for j in ("torso_yaw_joint", "torso_pitch_joint", "neck_yaw_joint", "neck_pitch_joint",
              "left_shoulder_pitch_joint", "left_shoulder_roll_joint", "left_shoulder_yaw_joint",
              "left_elbow_joint", "left_wrist_roll_joint", "left_wrist_pitch_joint", "right_knee_joint"):
        assert j in names
    for j in names:
        lim = m.limits_of(j)
        assert lim.lower < lim.upper and 0 < lim.velocity < 10 and lim.effort > 0
    # left/right roll limits mirror each other
    assert m.limits_of("left_shoulder_roll_joint").upper == -m.limits_of("right_shoulder_roll_joint").lower
    # every link that moves has simple geometry RViz can draw
    kinds = {v.kind for link in m.links.values() for v in link.visuals}
    assert kinds <= {"box", "cylinder", "sphere"} and len(kinds) == 3
    chain = [j.name for j in m.chain("base_link", "left_hand_tip")]
    assert chain[:2] == ["torso_yaw_joint", "torso_pitch_joint"] and chain[-1] == "left_hand_tip_joint"


def test_g1_urdf_29_joints_with_limits():
    m = load_urdf(g1_urdf())
    assert m.root == "pelvis"
    assert len(m.actuated_joint_names) == 29
    lim = m.limits_of("left_elbow_joint")
    assert lim.lower == pytest.approx(-1.0472) and lim.upper == pytest.approx(2.0944)
    assert lim.velocity == pytest.approx(37.0) and lim.effort == pytest.approx(25.0)
    assert m.limits_of("left_wrist_pitch_joint").velocity == pytest.approx(22.0)
    sp = m.joints["left_shoulder_pitch_joint"]
    assert sp.T_parent_joint[:3, 3] == pytest.approx([0.0039563, 0.10022, 0.24778])
    assert np.allclose(sp.axis, [0, 1, 0])
    # the commented-out floating base is not parsed
    assert "floating_base_joint" not in m.joints
    chain = [j.name for j in m.chain("pelvis", "left_wrist_yaw_link")]
    assert chain == ["waist_yaw_joint", "waist_roll_joint", "waist_pitch_joint", "left_shoulder_pitch_joint",
                     "left_shoulder_roll_joint", "left_shoulder_yaw_joint", "left_elbow_joint",
                     "left_wrist_roll_joint", "left_wrist_pitch_joint", "left_wrist_yaw_joint"]
    with pytest.raises(UrdfError, match="not below"):
        m.chain("left_elbow_link", "right_elbow_link")


@pytest.mark.parametrize("urdf", ["ours", "g1"])
def test_fk_and_jacobian_match_reference(urdf):
    """Compiled batched FK == naive recursive FK; analytic Jacobian == central differences."""
    model = load_urdf(default_urdf_path() if urdf == "ours" else g1_urdf())
    base = model.root
    tips = [l for l in model.links if not model.child_joints(l)]
    points = [PointRef(t, (0.03, -0.02, 0.05)) for t in tips]
    var = model.actuated_joint_names
    tree = KinematicTree(model, base, var, points)
    rng = np.random.default_rng(3)
    lo = np.array([model.limits_of(j).lower for j in var])
    hi = np.array([model.limits_of(j).upper for j in var])
    q = rng.uniform(lo, hi)
    pts, J = tree.points_and_jacobian(q)
    ref = all_link_poses(model, dict(zip(var, q)))
    for p, x in zip(points, pts):
        assert np.allclose((ref[p.link] @ np.r_[p.offset_link_m, 1.0])[:3], x, atol=1e-12)
    eps = 1e-6
    for i in range(len(q)):
        dq = np.zeros_like(q)
        dq[i] = eps
        fd = (tree.point_positions(q + dq) - tree.point_positions(q - dq)) / (2 * eps)
        assert np.allclose(J[:, :, i], fd, atol=1e-7)


_SMALL = """<robot name="small">
  <link name="a"/><link name="b"/><link name="c"/><link name="d"/>
  <joint name="slide" type="prismatic"><parent link="a"/><child link="b"/>
    <origin xyz="0 0 0.1" rpy="0 0 1.5707963"/><axis xyz="1 0 0"/>
    <limit lower="-0.2" upper="0.3" velocity="0.5" effort="10"/></joint>
  <joint name="spin" type="continuous"><parent link="b"/><child link="c"/><origin xyz="0.2 0 0"/>
    <axis xyz="0 0 1"/></joint>
  <joint name="follow" type="revolute"><parent link="c"/><child link="d"/><origin xyz="0.1 0 0"/>
    <axis xyz="0 1 0"/><limit lower="-3" upper="3" velocity="1" effort="1"/>
    <mimic joint="spin" multiplier="-2.0" offset="0.1"/></joint>
</robot>"""


def test_prismatic_continuous_and_mimic():
    m = parse_urdf_string(_SMALL)
    assert m.actuated_joint_names == ["slide", "spin"]          # the mimic joint is not independent
    assert m.limits_of("spin").lower == -math.inf and m.joints["follow"].mimic.multiplier == -2.0
    tree = KinematicTree(m, "a", ["slide", "spin"], [PointRef("d", (0.05, 0, 0))])
    q = np.array([0.15, 0.4])
    pts, J = tree.points_and_jacobian(q)
    ref = all_link_poses(m, {"slide": 0.15, "spin": 0.4})
    assert np.allclose((ref["d"] @ np.array([0.05, 0, 0, 1]))[:3], pts[0], atol=1e-12)
    # slide moves along the rotated x axis (= world y), the full mimic contribution is in column 1
    assert np.allclose(J[0, :, 0], [0, 1, 0], atol=1e-6)
    eps = 1e-6
    fd = (tree.point_positions(q + [0, eps]) - tree.point_positions(q - [0, eps])) / (2 * eps)
    assert np.allclose(J[0, :, 1], fd[0], atol=1e-7)


@pytest.mark.parametrize("text, match", [
    ("<robot name='x'><link name='a'", "malformed XML"),
    ("<robt name='x'><link name='a'/></robt>", "starts with <robot"),
    ("<robot name='x'><link name='a'/><joint name='j' type='fixed'><parent link='a'/><child link='ghost'/>"
     "</joint></robot>", "unknown child link 'ghost'.*links: a"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='revolute'><parent link='a'/>"
     "<child link='b'/><axis xyz='0 0 1'/></joint></robot>", "revolute but has no <limit"),
    ("<robot name='x'><link name='a'/><link name='b'/>"
     "<joint name='j1' type='fixed'><parent link='a'/><child link='b'/></joint>"
     "<joint name='j2' type='fixed'><parent link='b'/><child link='a'/></joint></robot>", "cycle"),
    ("<robot name='x'><link name='a'/><link name='b'/><link name='c'/>"
     "<joint name='j1' type='fixed'><parent link='a'/><child link='b'/></joint></robot>", "2 root links"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='ball'><parent link='a'/>"
     "<child link='b'/></joint></robot>", "valid types"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='revolute'><parent link='a'/>"
     "<child link='b'/><limit lower='1' upper='-1' velocity='1' effort='1'/></joint></robot>", "swap them"),
])
def test_bad_urdfs_give_clear_errors(text, match):
    with pytest.raises(UrdfError, match=match):
        parse_urdf_string(text)


def test_missing_urdf_file(tmp_path):
    with pytest.raises(UrdfError, match="not found"):
        load_urdf(tmp_path / "nope.urdf")
    assert issubclass(UrdfError, ValueError)


# -- mapping ---------------------------------------------------------------------------------
def test_mappings_load_for_both_robots():
    ours = load_mapping(ROBOTS / "pose_ros_humanoid.yaml")
    assert ours.command_joints()[:4] == ["torso_yaw_joint", "torso_pitch_joint", "neck_yaw_joint", "neck_pitch_joint"]
    assert len(ours.command_joints()) == 16 and len(ours.command_joints(full_body=True)) == 28
    shared_data_path("robots", "unitree_g1")
    g1 = load_mapping(ROBOTS / "unitree_g1.yaml")
    assert g1.model.name.startswith("g1") and len(g1.command_joints()) == 17
    assert len(g1.command_joints(full_body=True)) == 29
    assert {s.group for s in g1.active_segments()} == {"torso", "left_arm", "right_arm"}


def _write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROBOTS / "pose_ros_humanoid.yaml").read_text()
    assert old in text
    p = tmp_path / "m.yaml"
    p.write_text(text.replace(old, new, 1).replace("urdf: pose_ros_humanoid.urdf",
                                                   f"urdf: {ROBOTS / 'pose_ros_humanoid.urdf'}"))
    return p


@pytest.mark.parametrize("old, new, match", [
    ("robot: [left_shoulder_pitch_link, left_forearm_link]", "robot: [left_shoulder_pitch_link, left_forarm_link]",
     "unknown robot link 'left_forarm_link'.*valid links:.*left_forearm_link"),
    ("human: [left_shoulder, left_elbow]", "human: [left_shoulder, left_elbo]",
     "unknown keypoint 'left_elbo'.*valid keypoints:.*left_elbow"),
    ("torso: [torso_yaw_joint, torso_pitch_joint]", "torso: [torso_yaw_joint, torso_pich_joint]",
     "'torso_pich_joint' is not a movable joint.*valid joints:.*torso_pitch_joint"),
    ("  left_elbow_joint: 0.3", "  left_elbow_joint: 3.3", "outside its limits"),
    ("up: camera ", "up: sideways ", "use 'camera' or 'torso'"),
    ("teleop_groups: [torso, head, left_arm, right_arm]", "teleop_groups: [torso, heads]", "group 'heads'"),
])
def test_mapping_errors_name_the_problem(tmp_path, old, new, match):
    with pytest.raises(MappingError, match=match):
        load_mapping(_write_variant(tmp_path, old, new))
