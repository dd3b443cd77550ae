"""MuJoCo WidowX 250 tabletop simulator (no ROS).

Importing this package chooses the offscreen GL backend (MUJOCO_GL=egl, osmesa fallback) before mujoco is
imported; see ``_gl.py``. Main entry points: :class:`~pixelvla_sim.env.TabletopEnv`,
:data:`~pixelvla_sim.tasks.TASKS`, :class:`~pixelvla_sim.expert.ScriptedExpert`.
"""
from pixelvla_sim import _gl  # noqa: F401  (must run before any mujoco import)
