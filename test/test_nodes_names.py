"""Class names -> ROS names (pose_ros/nodes/names.py), checked with rclpy's own name validation.

Whatever a user calls an object (`002_master_chef_can`, `my-mug`, `obj 1`, names in other scripts,
nothing at all), the object pose node's `~/<class>/pose` topic and `<prefix><class>_<instance>` TF
frame must be valid, and two classes must never share one. No graph needed: pure string work.
"""
from __future__ import annotations

import pytest
from rclpy.validate_node_name import validate_node_name
from rclpy.validate_topic_name import validate_topic_name

from pose_ros.nodes.names import ros_name_token, unique_ros_name_tokens

TRICKY = ["002_master_chef_can", "my-mug", "obj 1", "  spaced  out  ", "tasse à café", "Ünïcödé", "杯子", "кружка",
          "", "---", "_hidden", "9", "a__b", "tab\there", "new\nline", "slash/name", "~tilde", "{braces}",
          "dots.in.name", "emoji 🍺 mug", "UPPER_case_42"]


def _valid(token: str) -> None:
    """rclpy accepts the token as a node name, inside a private topic and as a frame-like topic token."""
    assert validate_node_name(token)
    assert validate_topic_name(f"~/{token}/pose")
    assert validate_topic_name(f"/{token}_0")       # <class>_<instance> frame names follow the same rules
    assert token.isascii() and token[0] != "_" or token == "_hidden"


@pytest.mark.parametrize("name", TRICKY)
def test_every_name_makes_a_valid_ros_token(name):
    token = ros_name_token(name)
    _valid(token)
    assert ros_name_token(token) == token, "a token is its own token (idempotent)"


def test_readable_mappings():
    assert ros_name_token("002_master_chef_can") == "obj_002_master_chef_can"   # no hidden `_` topic
    assert ros_name_token("my-mug") == "my_mug"
    assert ros_name_token("obj 1") == "obj_1"
    assert ros_name_token("  spaced  out  ") == "spaced_out"
    assert ros_name_token("tasse à café") == "tasse_a_cafe"
    assert ros_name_token("杯子") == "u676f_u5b50"
    assert ros_name_token("") == "object"
    assert ros_name_token("---") == "object"
    assert ros_name_token("mug") == "mug"                 # valid names are unchanged
    assert ros_name_token("UPPER_case_42") == "UPPER_case_42"
    assert ros_name_token("9", prefix="n") == "n9"
    assert ros_name_token("", fallback="unknown") == "unknown"


def test_scripts_without_ascii_stay_apart():
    assert ros_name_token("杯子") != ros_name_token("盒子")
    assert ros_name_token("кружка") != ros_name_token("коробка")


def test_bad_prefix_or_fallback_is_refused():
    with pytest.raises(ValueError, match="prefix"):
        ros_name_token("1", prefix="")
    with pytest.raises(ValueError, match="fallback"):
        ros_name_token("", fallback="9lives")


def test_collisions_get_the_class_id_appended_to_each_colliding_name():
    names = ["my-mug", "my_mug", "my mug", "box", "", "---"]
    tokens = unique_ros_name_tokens(names)
    assert len(set(tokens.values())) == len(names), tokens
    assert tokens["box"] == "box"                              # no collision: unchanged
    assert tokens["my-mug"] == "my_mug_1" and tokens["my_mug"] == "my_mug_2" and tokens["my mug"] == "my_mug_3"
    assert tokens[""] == "object_5" and tokens["---"] == "object_6"
    for t in tokens.values():
        _valid(t)
    # Independent of the order the classes come in (each colliding name carries its own id).
    ids = [11, 12, 13, 14, 15, 16]
    forward = unique_ros_name_tokens(names, ids)
    backward = unique_ros_name_tokens(names[::-1], ids[::-1])
    assert forward == backward
    assert forward["my_mug"] == "my_mug_12"


def test_a_suffixed_name_that_is_already_taken_gets_another_suffix():
    tokens = unique_ros_name_tokens(["a-b", "a_b", "a_b_1", "a_b_2"])
    assert tokens["a_b_1"] == "a_b_1" and tokens["a_b_2"] == "a_b_2"   # real names keep their token
    assert len(set(tokens.values())) == 4, tokens
    assert tokens["a-b"] == "a_b_1_2" and tokens["a_b"] == "a_b_2_2"


def test_a_name_listed_twice_is_one_class_and_ids_must_match_names():
    assert unique_ros_name_tokens(["mug", "mug"]) == {"mug": "mug"}
    with pytest.raises(ValueError, match="class ids"):
        unique_ros_name_tokens(["a", "b"], [1])
