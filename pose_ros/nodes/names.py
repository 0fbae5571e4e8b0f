"""ROS names from arbitrary strings: object class names become topic and TF frame names.

A class name is whatever the user called a mesh folder or a BOP object (`002_master_chef_can`,
`my-mug`, `obj 1`, `tasse à café`); a ROS topic token must match ``[A-Za-z_][A-Za-z0-9_]*``, so
``~/002_master_chef_can/pose`` would stop the node at start-up. ``ros_name_token`` maps any string
to one valid token, and ``unique_ros_name_tokens`` does it for a model's classes without two of
them sharing a topic or frame. ROS-free (pure string work), so it is tested without a graph.

Rules (``ros_name_token``):
- letters with accents lose them (``é`` -> ``e``); any other non-ASCII character becomes ``u<hex code
  point>`` (``杯`` -> ``u676f``), so names in other scripts stay apart instead of all becoming the fallback;
- every run of characters outside ``[A-Za-z0-9_]`` becomes one ``_`` (none at either end): ``my-mug`` ->
  ``my_mug``, `` obj 1 `` -> ``obj_1``; underscores the user wrote are kept;
- a token starting with a digit gets ``prefix`` (``obj_``): ``002_master_chef_can`` -> ``obj_002_master_chef_can``.
  A leading ``_`` is not used because ROS 2 hides topics whose token starts with ``_``;
- nothing left (empty name, only punctuation) -> ``fallback`` (``object``).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

DIGIT_PREFIX = "obj_"
FALLBACK = "object"
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_]+")
_VALID_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def ros_name_token(name: str, prefix: str = DIGIT_PREFIX, fallback: str = FALLBACK) -> str:
    """A valid ROS name token (topic/namespace/frame component) for any string; see the module doc."""
    if not _VALID_TOKEN.fullmatch(prefix) or not _VALID_TOKEN.fullmatch(fallback):
        raise ValueError(f"prefix {prefix!r} and fallback {fallback!r} must themselves make valid ROS names")
    chars: list[str] = []
    for ch in str(name):
        if ch.isascii():
            chars.append(ch)
            continue
        base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
        chars.append(base if base else f" u{ord(ch):x} ")   # spaces: becomes its own `_`-separated part
    parts = [p for p in _INVALID_RUN.split("".join(chars)) if p]
    token = "_".join(parts)
    if not token:
        return fallback
    if token[0].isdigit():
        token = prefix + token
    return token


def unique_ros_name_tokens(names: Sequence[str], ids: Sequence[int] | None = None,
                           prefix: str = DIGIT_PREFIX, fallback: str = FALLBACK) -> dict[str, str]:
    """{name: token} for a model's class names, no two names sharing a token.

    Where distinct names map to the same token (``my-mug`` and ``my_mug``; two names in a script that
    has no ASCII form are kept apart already), *each* of them gets ``_<id>`` appended (``my_mug_3``,
    ``my_mug_4``; ``ids`` are the class ids, default the 1-based positions), so the result does not
    depend on the order of the classes; if that is still taken, ``_2``, ``_3``... follow. A name listed
    twice is one class and gets one token.
    """
    names = list(names)
    if ids is not None and len(ids) != len(names):
        raise ValueError(f"{len(ids)} class ids for {len(names)} class names")
    id_of: dict[str, int] = {}
    for i, n in enumerate(names):
        id_of.setdefault(n, int(ids[i]) if ids is not None else i + 1)
    base = {n: ros_name_token(n, prefix, fallback) for n in id_of}
    holders: dict[str, list[str]] = {}
    for n, t in base.items():
        holders.setdefault(t, []).append(n)
    out: dict[str, str] = {n: t for n, t in base.items() if len(holders[t]) == 1}
    taken = set(out.values())
    for n, t in base.items():
        if n in out:
            continue
        token = f"{t}_{id_of[n]}"
        k = 2
        while token in taken:
            token = f"{t}_{id_of[n]}_{k}"
            k += 1
        out[n] = token
        taken.add(token)
    return out
