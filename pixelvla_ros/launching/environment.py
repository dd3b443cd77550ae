"""The environment every ROS process of the package starts with, unless the user set it already.

- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: DDS discovery stays on this machine (SUBNET for a robot
  and an operator's laptop is the user's choice to make).
- FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds.xml: a shared-memory segment that holds camera frames
  (640x480 and 1280x720 rgb8 are lost over Fast DDS's default transports; see that file).

Used by `pixelvla-launch`, the launch files, the evaluation and the benchmarks: one place to change.
"""
from __future__ import annotations

import os
from typing import Mapping

from pixelvla_ros.launching.description import share_dir


def default_environment() -> dict[str, str]:
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(share_dir() / "config" / "fastdds.xml"),
    }


def missing_defaults(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The defaults the environment lacks (a Fast DDS profile under its pre-3.0 name counts as set)."""
    missing = {k: v for k, v in default_environment().items() if k not in environ}
    if "FASTRTPS_DEFAULT_PROFILES_FILE" in environ:
        missing.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return missing


def ros_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`environ` with the defaults it lacks: the environment for a node process."""
    return {**environ, **missing_defaults(environ)}
