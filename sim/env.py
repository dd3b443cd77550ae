"""TabletopEnv: the simulated WidowX 250 on a table, stepped by joint position targets (no ROS).

The model is the XML asset ``assets/tabletop.xml`` (which includes ``assets/wx250s.xml``): primitive shapes on
the real joint frames (see those files). World frame = robot base frame (x forward, y left, z up, metres,
table top at z = 0).

Control: :meth:`TabletopEnv.step` takes the same commands as the real arm's controllers: six joint position
targets (rad, :data:`~pixelvla_robots.wx250s.JOINT_NAMES` order) and a gripper command in [0, 1]
(Bridge convention, 1 = open), then advances one control period (default 0.2 s = 5 Hz: 100 physics steps of
2 ms). :meth:`TabletopEnv.step_ee_delta` executes one 7-D Bridge action as the real arm's executor would
(a one-action chunk through :class:`pixelvla_sim.control.ChunkControl`: safety gate, IK, then :meth:`step`).

Observation (dict returned by reset/step/observe):
    rgb               (H, W, 3) uint8, the camera image (None when rendering is off)
    masks             {object id: (H, W) bool} for the objects on the table (None when masks are off)
    joint_positions   (6,) float64 rad, arm joints
    gripper_position  float, left finger position in m (0.015 closed .. 0.037 open)
    gripper_state     float in [0, 1], 1 = open (Bridge convention)
    tcp_position      (3,) m, TCP in the world/base frame (MuJoCo site "tcp")
    tcp_rotation      (3, 3) TCP rotation (TCP frame -> world)
    object_poses      {object id: (7,) [x, y, z, qw, qx, qy, qz]} world frame, objects on the table
    success           bool, the task's success condition holds now
    first_reached     object id the TCP came within REACH_RADIUS of first this episode, plate and bowl
                      excepted (the object the arm went for), None before; checked at the end of each step
    first_touched     the same for the first gripper contact
    first_lifted      the same for the first object raised LIFT_HEIGHT above its resting height (picked up)
    step              int, control steps taken since reset
    truncated         bool, step >= max_episode_steps
    task, instruction, target_object, destination   str (destination: the plate or bowl the target goes to)
    camera            CameraModel of the rendering camera (its pose varies per episode), as calibrated
Rendering is offscreen (EGL by default, OSMesa as fallback, see ``_gl.py``); shadows and anti-aliasing
(MSAA 4x) are off by default.
"""
from __future__ import annotations

import weakref
from pathlib import Path

from pixelvla_sim import _gl  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)

import mujoco
import numpy as np

from pixelvla_robots import wx250s
from pixelvla_robots.camera import MUJOCO_TO_OPTICAL, CameraModel, intrinsics
from pixelvla_sim.control import ChunkControl, load_robot_parameters
from pixelvla_sim.tasks import (
    DESTINATIONS, OBJECT_NAMES, PARK_POSITIONS, REST_Z, EpisodeSpec, check_success, sample_episode,
)

ASSET_DIR = Path(__file__).resolve().parent / "assets"
SCENE_XML = ASSET_DIR / "tabletop.xml"
GRIPPER_GEOMS = ("gripper_palm", "left_finger_pad", "right_finger_pad")
REACH_RADIUS = 0.03  # m, TCP to object centre: under half the closest spacing of two objects, so one at a time
LIFT_HEIGHT = 0.03  # m above the resting height: an object this high has been picked up (pushed ones stay lower)


def _rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    axis = rotvec / angle
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _finite_vector(value, size: int, name: str, layout: str) -> np.ndarray:
    """`value` as a (size,) float array of finite numbers; ValueError naming `name` and its `layout` otherwise."""
    try:
        vector = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be {size} numbers {layout}, got {value!r}") from exc
    if vector.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) {layout}, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} must be finite, got {vector.tolist()}")
    return vector


class TabletopEnv:
    """Simulated WidowX 250 tabletop.

    Args:
        render_size: (height, width) of rendered images in pixels.
        shadows: render shadows of the key light (1024 shadow map; ~7x slower on CPU).
        antialias: 4x multisample anti-aliasing.
        camera: name of the MuJoCo camera to render: "third_person" (fixed, like Bridge's) or "wrist".
        render: render an RGB image into each observation.
        masks: render per-object segmentation masks into each observation.
        control_period: seconds per control step (0.2 = 5 Hz).
        physics_dt: physics time step in seconds; control_period / physics_dt substeps per control step.
        max_episode_steps: an observation says truncated=True from this step on (the episode may go on).
        robot_config: the robot YAML whose executor parameters :attr:`chunk_control` runs (default
            config/robots/widowx_bridge.yaml), e.g. a copy with another chunk schedule to try in process.
    """

    def __init__(
        self,
        render_size: tuple[int, int] = (224, 224),
        shadows: bool = False,
        antialias: bool = False,
        camera: str = "third_person",
        render: bool = True,
        masks: bool = True,
        control_period: float = 0.2,
        physics_dt: float = 0.002,
        max_episode_steps: int = 60,
        robot_config: str | Path | None = None,
    ):
        # A robot file given is read first, so a wrong one fails before anything is allocated; the default one
        # (a source checkout's) is read by the ChunkControl, made on first use.
        self._robot_parameters = None if robot_config is None else load_robot_parameters(robot_config)
        height, width = (int(v) for v in render_size)
        if height <= 0 or width <= 0:
            raise ValueError(f"render_size must be positive (height, width), got {render_size}")
        self.model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
        self.data = mujoco.MjData(self.model)
        m = self.model
        if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise ValueError(f"unknown camera {camera!r}; cameras: {[m.camera(i).name for i in range(m.ncam)]}")
        self.height, self.width = height, width
        self.shadows, self.antialias = bool(shadows), bool(antialias)
        self.camera = camera
        self.render_rgb, self.render_masks = bool(render), bool(masks)
        m.opt.timestep = float(physics_dt)
        self.substeps = int(round(control_period / physics_dt))
        if self.substeps < 1:
            raise ValueError("control_period must be at least one physics step")
        self.control_period = self.substeps * m.opt.timestep
        self.max_episode_steps = int(max_episode_steps)
        m.vis.global_.offwidth = max(m.vis.global_.offwidth, width)
        m.vis.global_.offheight = max(m.vis.global_.offheight, height)
        m.vis.quality.offsamples = 4 if self.antialias else 0

        def jid(name):
            return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)

        self._arm_qadr = np.array([m.jnt_qposadr[jid(n)] for n in wx250s.JOINT_NAMES])
        self._arm_dadr = np.array([m.jnt_dofadr[jid(n)] for n in wx250s.JOINT_NAMES])
        self._finger_qadr = np.array([m.jnt_qposadr[jid(n)] for n in wx250s.FINGER_NAMES])
        self._finger_dadr = np.array([m.jnt_dofadr[jid(n)] for n in wx250s.FINGER_NAMES])
        self._obj_qadr = {n: m.jnt_qposadr[jid(n)] for n in OBJECT_NAMES}
        self._obj_dadr = {n: m.jnt_dofadr[jid(n)] for n in OBJECT_NAMES}
        self._obj_body = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n) for n in OBJECT_NAMES}
        self._tcp_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._cam_id = {m.camera(i).name: i for i in range(m.ncam)}
        self._gripper_geoms = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g) for g in GRIPPER_GEOMS}
        # geom id -> index into OBJECT_NAMES (-1: not an object), for segmentation masks and contacts.
        self._geom_object = np.full(m.ngeom, -1, dtype=np.int64)
        for k, name in enumerate(OBJECT_NAMES):
            self._geom_object[m.geom_bodyid == self._obj_body[name]] = k
        self._light_id = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_LIGHT, n) for n in ("key", "fill")}
        self._table_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "table")
        self._nominal = {
            "geom_rgba": m.geom_rgba.copy(), "light_dir": m.light_dir.copy(), "light_diffuse": m.light_diffuse.copy(),
            "cam_pos": m.cam_pos.copy(), "cam_quat": m.cam_quat.copy(), "ambient": m.vis.headlight.ambient.copy(),
        }
        self._renderer: mujoco.Renderer | None = None
        self.spec: EpisodeSpec | None = None
        self.step_count = 0
        self.first_reached: str | None = None
        self.first_touched: str | None = None
        self.first_lifted: str | None = None
        self._chunk_control: ChunkControl | None = None

    # ------------------------------------------------------------------------------------------ episode
    def reset(self, task: str, seed: int, render: bool | None = None) -> dict:
        """Start an episode of `task` from `seed` (same task + seed = same episode); returns the observation.

        `render` as in :meth:`step`.

        ValueError for an unknown task or a bad seed, raised before the simulation is touched.
        """
        spec = sample_episode(task, seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self._apply_appearance(spec)
        for name in OBJECT_NAMES:
            adr = self._obj_qadr[name]
            if name in spec.placements:
                x, y, yaw = spec.placements[name]
                d.qpos[adr:adr + 3] = (x, y, REST_Z[name])
            else:
                px, py = PARK_POSITIONS[name]
                d.qpos[adr:adr + 3] = (px, py, -0.75 + REST_Z[name])
                yaw = 0.0
            d.qpos[adr + 3:adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        q0 = wx250s.clamp_to_limits(wx250s.HOME_Q + spec.start_q_offset)
        d.qpos[self._arm_qadr] = q0
        finger = wx250s.FINGER_OPEN
        d.qpos[self._finger_qadr] = (finger, -finger)
        d.ctrl[:6] = q0
        d.ctrl[6:8] = (finger, -finger)
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=50)  # let contacts settle (0.1 s)
        mujoco.mj_fwdPosition(m, d)      # positions, cameras and contacts of the final state
        self.spec = spec
        self.step_count = 0
        self.first_reached = self.first_touched = self.first_lifted = None
        obs = self.observe(render=render)
        if self._chunk_control is not None:
            self._chunk_control.reset(obs)
        return obs

    def _apply_appearance(self, spec: EpisodeSpec) -> None:
        m, nom = self.model, self._nominal
        m.geom_rgba[:] = nom["geom_rgba"]
        for name, rgba in spec.colors.items():
            m.geom_rgba[m.geom_bodyid == self._obj_body[name]] = rgba
        m.geom_rgba[self._table_geom, :3] = spec.table_rgb
        key, fill = self._light_id["key"], self._light_id["fill"]
        m.light_dir[:] = nom["light_dir"]
        m.light_dir[key] = spec.key_light_dir / np.linalg.norm(spec.key_light_dir)
        m.light_diffuse[:] = nom["light_diffuse"]
        m.light_diffuse[key] = spec.key_light_diffuse
        m.light_diffuse[fill] = spec.fill_light_diffuse
        m.vis.headlight.ambient[:] = spec.ambient
        m.cam_pos[:] = nom["cam_pos"]
        m.cam_quat[:] = nom["cam_quat"]
        cam = self._cam_id["third_person"]
        m.cam_pos[cam] = nom["cam_pos"][cam] + spec.camera_offset
        rot = _rotvec_to_matrix(spec.camera_rotvec) @ wx250s.quat_to_matrix(nom["cam_quat"][cam])
        m.cam_quat[cam] = wx250s.matrix_to_quat(rot)

    def _require_episode(self) -> EpisodeSpec:
        if self.spec is None:
            raise RuntimeError("call reset(task, seed) before stepping or observing")
        return self.spec

    # ------------------------------------------------------------------------------------------ control
    @staticmethod
    def validate_command(q_target, gripper) -> tuple[np.ndarray, float]:
        """Checked copies of a command: q_target (6,) finite rad, gripper finite scalar (clipped to [0, 1]).

        ValueError with the reason otherwise. Joint targets outside the limits are clipped to them.
        """
        q = _finite_vector(q_target, 6, "q_target", f"({', '.join(wx250s.JOINT_NAMES)}, rad)")
        try:
            g = float(np.asarray(gripper, dtype=float).reshape(()))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"gripper command must be one number in [0, 1], got {gripper!r}") from exc
        if not np.isfinite(g):
            raise ValueError(f"gripper command must be finite, got {g}")
        return wx250s.clamp_to_limits(q), float(np.clip(g, 0.0, 1.0))

    def step(self, q_target, gripper, render: bool | None = None) -> dict:
        """Hold joint targets `q_target` (6,) rad and gripper command (1 = open) for one control period.

        Bad input (wrong length, NaN/inf) raises ValueError and leaves the simulation untouched.
        `render` overrides the constructor's render/masks choice for this observation (False: no images).
        """
        self._require_episode()
        q, g = self.validate_command(q_target, gripper)
        finger = wx250s.gripper_to_finger(g)
        d = self.data
        d.ctrl[:6] = q
        d.ctrl[6:8] = (finger, -finger)
        mujoco.mj_step(self.model, d, nstep=self.substeps)
        mujoco.mj_fwdPosition(self.model, d)  # positions, cameras and contacts of the final state
        self.step_count += 1
        self._note_first_approach()
        return self.observe(render=render)

    def _note_first_approach(self) -> None:
        """Record the first object (plate and bowl excepted) the TCP reached, the gripper touched and the
        arm lifted."""
        if self.first_reached is None:
            tcp = self.tcp_pose()[0]
            near = [n for n in self._require_episode().active_objects if n not in DESTINATIONS
                    and np.linalg.norm(self.object_pose(n)[:3] - tcp) < REACH_RADIUS]
            self.first_reached = near[0] if near else None
        if self.first_touched is None:
            touched = [n for n in self.gripper_contacts() if n not in DESTINATIONS]
            self.first_touched = touched[0] if touched else None
        if self.first_lifted is None:
            lifted = [n for n in self._require_episode().active_objects if n not in DESTINATIONS
                      and self.object_pose(n)[2] - REST_Z[n] > LIFT_HEIGHT]
            self.first_lifted = lifted[0] if lifted else None

    @property
    def chunk_control(self) -> ChunkControl:
        """The robot side of the stack on this env: chunks through the executor of the robot's parameters
        (the constructor's `robot_config`), reset with every episode."""
        if self._chunk_control is None:
            self._chunk_control = ChunkControl(self, self._robot_parameters)
            if self.spec is not None:
                self._chunk_control.reset(self.observe(render=False))
        return self._chunk_control

    def step_ee_delta(self, action, render: bool | None = None) -> dict:
        """One control step from a Bridge 7-D action [dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper].

        Executed as the executor node executes a chunk of this one action that arrives every control
        period (:attr:`chunk_control`): the delta is taken from the measured TCP pose (base frame, see
        :mod:`pixelvla_robots.wx250s`), cut to the safety gate's limits and turned into joint targets by
        its IK. A refused action (not 7 finite values) raises ValueError and leaves the simulation untouched.
        """
        self._require_episode()
        a = _finite_vector(action, 7, "action", "[dx, dy, dz, droll, dpitch, dyaw, gripper]")
        self.chunk_control.offer(a[None])
        return self.chunk_control.step(render=render)

    # ------------------------------------------------------------------------------------------ state
    def joint_positions(self) -> np.ndarray:
        """(6,) measured arm joint angles, rad."""
        return self.data.qpos[self._arm_qadr].copy()

    def joint_state(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """For sensor_msgs/JointState: (names, positions (8,), velocities (8,)) of the six arm joints (rad,
        rad/s) then left_finger and right_finger (m, m/s), Interbotix names."""
        d = self.data
        qadr = np.r_[self._arm_qadr, self._finger_qadr]
        dadr = np.r_[self._arm_dadr, self._finger_dadr]
        return wx250s.JOINT_NAMES + wx250s.FINGER_NAMES, d.qpos[qadr].copy(), d.qvel[dadr].copy()

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured TCP (position (3,) m, rotation (3, 3)) in the world/base frame, from MuJoCo's site."""
        d = self.data
        return d.site_xpos[self._tcp_site].copy(), d.site_xmat[self._tcp_site].reshape(3, 3).copy()

    def object_pose(self, name: str) -> np.ndarray:
        """(7,) [x, y, z, qw, qx, qy, qz] of object `name` in the world frame."""
        adr = self._obj_qadr[name]
        return self.data.qpos[adr:adr + 7].copy()

    def gripper_contacts(self) -> list[str]:
        """Object ids a gripper geom touches now, in OBJECT_NAMES order."""
        d, touched = self.data, set()
        for i in range(d.ncon):
            g1, g2 = d.contact[i].geom1, d.contact[i].geom2
            if g1 in self._gripper_geoms and self._geom_object[g2] >= 0:
                touched.add(int(self._geom_object[g2]))
            if g2 in self._gripper_geoms and self._geom_object[g1] >= 0:
                touched.add(int(self._geom_object[g1]))
        return [OBJECT_NAMES[k] for k in sorted(touched)]

    def target_released(self) -> bool:
        """True when no gripper geom touches the episode's target object."""
        return self._require_episode().target_object not in self.gripper_contacts()

    def success(self) -> bool:
        """The task's success condition (see tasks.check_success) on the current state."""
        spec = self._require_episode()
        positions = {n: self.data.qpos[self._obj_qadr[n]:self._obj_qadr[n] + 3] for n in spec.active_objects}
        return check_success(spec, positions, self.target_released())

    def observe(self, render: bool | None = None) -> dict:
        """The observation dict (see the module docstring) of the current state."""
        spec = self._require_episode()
        q = self.joint_positions()
        finger = float(self.data.qpos[self._finger_qadr[0]])
        tcp_pos, tcp_rot = self.tcp_pose()
        do_rgb = self.render_rgb if render is None else bool(render)
        do_masks = self.render_masks if render is None else bool(render)
        return {
            "rgb": self.render() if do_rgb else None,
            "masks": self.render_masks_now() if do_masks else None,
            "joint_positions": q,
            "gripper_position": finger,
            "gripper_state": wx250s.finger_to_gripper(finger),
            "tcp_position": tcp_pos,
            "tcp_rotation": tcp_rot,
            "object_poses": {n: self.object_pose(n) for n in spec.active_objects},
            "success": self.success(),
            "first_reached": self.first_reached,
            "first_touched": self.first_touched,
            "first_lifted": self.first_lifted,
            "step": self.step_count,
            "truncated": self.step_count >= self.max_episode_steps,
            "task": spec.task,
            "instruction": spec.instruction,
            "target_object": spec.target_object,
            "destination": spec.destination,
            "camera": self.camera_model(),  # the calibrated camera: intrinsics and its pose this episode
        }

    # ------------------------------------------------------------------------------------------ rendering
    def _get_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            # Free the GL context before the interpreter tears modules down (OSMesa complains otherwise).
            self._finalizer = weakref.finalize(self, self._renderer.close)
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.shadows
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        return self._renderer

    def render(self, camera: str | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of `camera` (default: the constructor's camera)."""
        r = self._get_renderer()
        r.update_scene(self.data, camera or self.camera)
        return r.render().copy()

    def render_segmentation(self, camera: str | None = None) -> np.ndarray:
        """(H, W) int64 map: index into OBJECT_NAMES of the object seen at each pixel, -1 elsewhere."""
        r = self._get_renderer()
        r.enable_segmentation_rendering()
        try:
            r.update_scene(self.data, camera or self.camera)
            seg = r.render()
        finally:
            r.disable_segmentation_rendering()
        ids, types = seg[..., 0], seg[..., 1]
        is_geom = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0)
        out = np.full(ids.shape, -1, dtype=np.int64)
        out[is_geom] = self._geom_object[ids[is_geom]]
        return out

    def render_masks_now(self, camera: str | None = None) -> dict[str, np.ndarray]:
        """{object id: (H, W) bool mask} for every object on the table (visible pixels only)."""
        seg = self.render_segmentation(camera)
        spec = self._require_episode()
        return {n: seg == OBJECT_NAMES.index(n) for n in spec.active_objects}

    def camera_model(self, camera: str | None = None) -> CameraModel:
        """Intrinsics at this env's render size + the camera's current pose (optical frame) in the world frame.

        The third-person camera's pose changes per episode (seeded jitter): ask again after reset.
        """
        name = camera or self.camera
        cid = self._cam_id[name]
        if self.spec is None:  # nothing computed yet: the model's initial pose
            mujoco.mj_fwdPosition(self.model, self.data)
        fx, fy, cx, cy = intrinsics(self.width, self.height, float(self.model.cam_fovy[cid]))
        rot = self.data.cam_xmat[cid].reshape(3, 3) @ MUJOCO_TO_OPTICAL
        return CameraModel(name, self.width, self.height, fx, fy, cx, cy,
                           self.data.cam_xpos[cid].copy(), rot.copy())

    def close(self) -> None:
        """Free the renderer's GL context."""
        if self._renderer is not None:
            self._finalizer()  # closes the renderer once
            self._renderer = None

    def __enter__(self) -> TabletopEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
