"""Choose MuJoCo's offscreen OpenGL backend before mujoco is imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported. If the variable is unset, this picks
``egl`` (Mesa's llvmpipe renders on the CPU; needs libEGL, e.g. Debian's libegl1 + libegl-mesa0) and falls
back to ``osmesa`` (Debian's libosmesa6) when no libEGL is found. ``PYOPENGL_PLATFORM`` follows it.
A value the user set is never changed: ``MUJOCO_GL=osmesa python ...`` forces the fallback.
"""
from __future__ import annotations

import ctypes.util
import os


def configure_gl_backend() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM) if unset; return the backend in use."""
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not backend:
        if ctypes.util.find_library("EGL"):
            backend = "egl"
        elif ctypes.util.find_library("OSMesa"):
            backend = "osmesa"
        else:
            backend = "egl"  # let mujoco report the missing library when rendering is first used
        os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


GL_BACKEND = configure_gl_backend()
