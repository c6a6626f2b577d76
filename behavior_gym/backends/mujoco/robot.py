"""An R1 Pro-like robot for MuJoCo, written for this project.

Kinematics follow BEHAVIOR's R1 Pro closely enough for the 23-D action to mean the same thing:
a holonomic base (virtual x, y, yaw joints driven by velocity actuators, like OmniGibson's
HolonomicBaseJointController), a 4-joint torso (three pitch joints and a yaw, standing at
BEHAVIOR's reset pose (1.025, -1.45, -0.47, 0)), two 7-joint arms with BEHAVIOR's joint limits,
position-controlled to absolute targets (OmniGibson's JointController), and two parallel-jaw
grippers with two fingers each (0 = closed, 0.05 m = open per finger). Cameras: `zed_link` on
the head (99.2 deg field of view, OmniGibson's head intrinsics fx=306 at 720 px) and a
`realsense_link` on each wrist (63.4 deg, fx=388.7 at 480 px).

At the reset pose the robot is about 1.65 m tall with the shoulders at 1.33 m; each arm reaches
about 0.8 m from the shoulder, which covers a 0.72 m table in front of the base, and leaning the
torso brings the hands to a floor-level bin. Every robot body is gravity-compensated (MuJoCo's `gravcomp` is
per body, not inherited), as real arms are by their controllers, so joint targets are tracked
without sag.

Rendering cost on a CPU (Mesa llvmpipe) is dominated by geometry: planes are drawn as a grid
whose spacing is their third size value (keep it large), and curved primitives are tessellated
coarsely (`numslices`), which together make a 3-camera frame about 4x cheaper.

Collision groups (contype / conaffinity bits) used by every scene:
    STATIC  (1): floor, walls, furniture      ROBOT (2): robot geoms      OBJECT (4): movable objects
The robot does not collide with itself or the floor, only with furniture and objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from behavior_gym.spaces import ACTION_PART, GRIPPER_OPEN_WIDTH, TORSO_RESET

CONTYPE_STATIC, CONTYPE_ROBOT, CONTYPE_OBJECT = 1, 2, 4
# (contype, conaffinity) pairs: two geoms collide when (c1 & a2) or (c2 & a1).
COLLIDE_STATIC = (CONTYPE_STATIC, CONTYPE_ROBOT | CONTYPE_OBJECT)
COLLIDE_ROBOT = (CONTYPE_ROBOT, CONTYPE_OBJECT)
COLLIDE_OBJECT = (CONTYPE_OBJECT, CONTYPE_STATIC | CONTYPE_ROBOT | CONTYPE_OBJECT)
FLOOR_COLLIDE = (CONTYPE_STATIC, CONTYPE_OBJECT)

PHYSICS_HZ = 120
CONTROL_HZ = 30
SUBSTEPS = PHYSICS_HZ // CONTROL_HZ

HEAD_FOVY = math.degrees(2 * math.atan(360 / 306))  # 99.2
WRIST_FOVY = math.degrees(2 * math.atan(240 / 388.6639))  # 63.4

# Joint speed limits (like the velocity limits a real robot's drives and PhysX joint drives apply):
# position targets are approached no faster than this, so a target far away (a random action, a
# jump between chunks) moves the joint at a bounded speed instead of whipping it.
TORSO_SPEED = 1.5  # rad/s
ARM_SPEED = 3.0  # rad/s
FINGER_SPEED = 0.2  # m/s

TORSO_JOINTS = tuple(f"torso_joint{i}" for i in range(1, 5))
BASE_JOINTS = ("base_x", "base_y", "base_yaw")
ARMS = ("left", "right")


def arm_joints(arm: str) -> tuple[str, ...]:
    return tuple(f"{arm}_arm_joint{i}" for i in range(1, 8))


def finger_joints(arm: str) -> tuple[str, str]:
    return (f"{arm}_gripper_finger_joint1", f"{arm}_gripper_finger_joint2")


# Arm resting pose: elbows bent, hands in front of the chest, grippers pointing forward-down.
ARM_RESET = {
    "left": (-0.3, 0.2, 0.0, -1.3, 0.0, 0.6, 0.0),
    "right": (-0.3, -0.2, 0.0, -1.3, 0.0, 0.6, 0.0),
}


def reset_action() -> np.ndarray:
    """The 23-D action that holds the robot still at its reset pose with open grippers."""
    a = np.zeros(23, dtype=np.float32)
    a[ACTION_PART["torso"].slice] = TORSO_RESET
    a[ACTION_PART["left_arm"].slice] = ARM_RESET["left"]
    a[ACTION_PART["right_arm"].slice] = ARM_RESET["right"]
    a[ACTION_PART["left_gripper"].slice] = 1.0
    a[ACTION_PART["right_gripper"].slice] = 1.0
    return a


@dataclass(frozen=True)
class Dimensions:
    base_half: tuple[float, float, float] = (0.25, 0.23, 0.13)  # half extents of the base box
    base_top: float = 0.30
    leg: float = 0.38  # torso links 1 and 2
    waist: float = 0.08  # torso link 3
    shoulder_height: float = 0.28  # above the yaw joint
    shoulder_width: float = 0.22
    upper_arm: float = 0.37
    forearm: float = 0.35
    hand: float = 0.17  # wrist pitch joint to the grasp point between the fingertips


DIMS = Dimensions()


def _quat_y(angle: float) -> str:
    return f"{math.cos(angle / 2):.6f} 0 {math.sin(angle / 2):.6f} 0"


def _range(part: str, i: int) -> str:
    p = ACTION_PART[part]
    return f"{p.low[i]} {p.high[i]}"


def _arm_xml(arm: str, sign: int) -> str:
    """One 7-joint arm with its gripper and wrist camera; `sign` is +1 (left) or -1 (right)."""
    d = DIMS
    part = f"{arm}_arm"
    j = arm_joints(arm)
    f1, f2 = finger_joints(arm)
    geom_c = 'contype="{}" conaffinity="{}"'.format(*COLLIDE_ROBOT)
    finger = (
        'type="box" size="0.012 0.006 0.03" rgba="0.15 0.15 0.15 1" friction="1.5 0.02 0.001" '
        'condim="4" solref="0.004 1" solimp="0.95 0.99 0.001" priority="1" ' + geom_c
    )
    return f"""
<body name="{arm}_shoulder_link" gravcomp="1" pos="0 {sign * d.shoulder_width} {d.shoulder_height}">
  <joint name="{j[0]}" axis="0 1 0" range="{_range(part, 0)}"/>
  <geom type="sphere" size="0.055" rgba="0.85 0.85 0.87 1" mass="1.5" {geom_c}/>
  <body name="{arm}_arm_link1" gravcomp="1">
    <joint name="{j[1]}" axis="1 0 0" range="{_range(part, 1)}"/>
    <inertial pos="0 0 0" mass="0.3" diaginertia="0.001 0.001 0.001"/>
    <body name="{arm}_upper_arm_link" gravcomp="1">
      <joint name="{j[2]}" axis="0 0 1" range="{_range(part, 2)}"/>
      <geom type="capsule" fromto="0 0 -0.04 0 0 {-d.upper_arm + 0.03}" size="0.042" rgba="0.85 0.85 0.87 1"
            mass="1.8" {geom_c}/>
      <body name="{arm}_forearm_link" gravcomp="1" pos="0 0 {-d.upper_arm}">
        <joint name="{j[3]}" axis="0 1 0" range="{_range(part, 3)}"/>
        <geom type="sphere" size="0.045" rgba="0.3 0.3 0.32 1" mass="0.5" {geom_c}/>
        <body name="{arm}_forearm_roll_link" gravcomp="1">
          <joint name="{j[4]}" axis="0 0 1" range="{_range(part, 4)}"/>
          <geom type="capsule" fromto="0 0 -0.04 0 0 {-d.forearm + 0.03}" size="0.035" rgba="0.85 0.85 0.87 1"
                mass="1.2" {geom_c}/>
          <body name="{arm}_wrist_link" gravcomp="1" pos="0 0 {-d.forearm}">
            <joint name="{j[5]}" axis="0 1 0" range="{_range(part, 5)}"/>
            <geom type="sphere" size="0.036" rgba="0.3 0.3 0.32 1" mass="0.3" {geom_c}/>
            <body name="{arm}_hand_link" gravcomp="1">
              <joint name="{j[6]}" axis="0 0 1" range="{_range(part, 6)}"/>
              <geom name="{arm}_palm" type="box" pos="0 0 -0.09" size="0.035 0.07 0.04" rgba="0.2 0.2 0.22 1"
                    mass="0.4" {geom_c}/>
              <camera name="{arm}_realsense_link" pos="0.05 0 -0.06" xyaxes="0 -1 0 1 0 0" fovy="{WRIST_FOVY:.3f}"/>
              <site name="{arm}_eef" pos="0 0 {-d.hand}" size="0.008" rgba="1 0 0 0" group="4"/>
              <body name="{arm}_finger1_link" gravcomp="1" pos="0 0 {-d.hand}">
                <joint name="{f1}" type="slide" axis="0 1 0" range="0 {GRIPPER_OPEN_WIDTH}"/>
                <geom name="{arm}_finger1" pos="0 0.006 0" {finger} mass="0.05"/>
              </body>
              <body name="{arm}_finger2_link" gravcomp="1" pos="0 0 {-d.hand}">
                <joint name="{f2}" type="slide" axis="0 -1 0" range="0 {GRIPPER_OPEN_WIDTH}"/>
                <geom name="{arm}_finger2" pos="0 -0.006 0" {finger} mass="0.05"/>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
  </body>
</body>"""


def robot_body_xml() -> str:
    """The robot as an MJCF `<body>` tree rooted at the world origin (base pose set via qpos)."""
    d = DIMS
    q1, q2, q3, _ = TORSO_RESET
    # Pre-rotations chosen so that the reset pose leans link 1 forward by 0.5 rad, link 2 back by
    # 0.5 rad and keeps the chest upright: a knee-like stance like the real robot's.
    pre1, pre2, pre3 = 0.5 - q1, -0.5 - (0.5 + q2), 0.0 - (-0.5 + q3)
    geom_c = 'contype="{}" conaffinity="{}"'.format(*COLLIDE_ROBOT)
    hx, hy, hz = d.base_half
    return f"""
<body name="base_link" pos="0 0 0" gravcomp="1">
  <joint name="base_x" type="slide" axis="1 0 0" damping="0" armature="10"/>
  <joint name="base_y" type="slide" axis="0 1 0" damping="0" armature="10"/>
  <joint name="base_yaw" type="hinge" axis="0 0 1" damping="0" armature="5"/>
  <geom name="base_body" type="box" pos="0 0 {d.base_top - hz}" size="{hx} {hy} {hz}" rgba="0.25 0.25 0.28 1"
        mass="60" {geom_c}/>
  <geom type="cylinder" pos="0 0 0.04" size="0.06 0.04" euler="90 0 0" rgba="0.1 0.1 0.1 1" mass="1"
        contype="0" conaffinity="0"/>
  <body name="torso_link1" gravcomp="1" pos="0 0 {d.base_top}" quat="{_quat_y(pre1)}">
    <joint name="torso_joint1" axis="0 1 0" range="{_range('torso', 0)}"/>
    <geom type="capsule" fromto="0 0 0 0 0 {d.leg}" size="0.07" rgba="0.85 0.85 0.87 1" mass="4" {geom_c}/>
    <body name="torso_link2" gravcomp="1" pos="0 0 {d.leg}" quat="{_quat_y(pre2)}">
      <joint name="torso_joint2" axis="0 1 0" range="{_range('torso', 1)}"/>
      <geom type="capsule" fromto="0 0 0 0 0 {d.leg}" size="0.07" rgba="0.85 0.85 0.87 1" mass="4" {geom_c}/>
      <body name="torso_link3" gravcomp="1" pos="0 0 {d.leg}" quat="{_quat_y(pre3)}">
        <joint name="torso_joint3" axis="0 1 0" range="{_range('torso', 2)}"/>
        <geom type="cylinder" fromto="0 0 0 0 0 {d.waist}" size="0.08" rgba="0.3 0.3 0.32 1" mass="2" {geom_c}/>
        <body name="torso_link4" gravcomp="1" pos="0 0 {d.waist}">
          <joint name="torso_joint4" axis="0 0 1" range="{_range('torso', 3)}"/>
          <geom name="chest" type="box" pos="0 0 0.17" size="0.1 0.17 0.15" rgba="0.85 0.85 0.87 1" mass="8"
                {geom_c}/>
          <geom type="capsule" fromto="0 0 0.32 0 0 0.5" size="0.03" rgba="0.3 0.3 0.32 1" mass="0.3"
                contype="0" conaffinity="0"/>
          <body name="head_link" gravcomp="1" pos="0 0 0.55">
            <geom type="box" size="0.05 0.09 0.05" rgba="0.12 0.12 0.14 1" mass="0.5" {geom_c}/>
            <camera name="zed_link" pos="0.055 0 0" xyaxes="0 -1 0 {math.sin(0.6):.5f} 0 {math.cos(0.6):.5f}"
                    fovy="{HEAD_FOVY:.3f}"/>
          </body>
          {_arm_xml("left", +1)}
          {_arm_xml("right", -1)}
        </body>
      </body>
    </body>
  </body>
</body>"""


def actuators_xml() -> str:
    """Velocity actuators for the base, position actuators for torso, arms and fingers."""
    lines = [f'<velocity name="{j}" joint="{j}" kv="{kv}" forcerange="-{f} {f}"/>'
             for j, kv, f in (("base_x", 4000, 3000), ("base_y", 4000, 3000), ("base_yaw", 1500, 1500))]
    for i, j in enumerate(TORSO_JOINTS):
        lines.append(f'<position name="{j}" joint="{j}" kp="6000" dampratio="1" forcerange="-2000 2000" '
                     f'ctrlrange="{_range("torso", i)}"/>')
    for arm in ARMS:
        for i, j in enumerate(arm_joints(arm)):
            kp = 800 if i < 4 else 300
            lines.append(f'<position name="{j}" joint="{j}" kp="{kp}" dampratio="1" forcerange="-300 300" '
                         f'ctrlrange="{_range(arm + "_arm", i)}"/>')
        for j in finger_joints(arm):
            lines.append(f'<position name="{j}" joint="{j}" kp="800" dampratio="1" forcerange="-40 40" '
                         f'ctrlrange="0 {GRIPPER_OPEN_WIDTH}"/>')
    return "\n".join(lines)


def world_xml(extra_worldbody: str = "", extra_assets: str = "") -> str:
    """A world with floor, lights and the robot; tasks add their fixtures through `MjSpec`."""
    fc, fa = FLOOR_COLLIDE
    return f"""
<mujoco model="behavior_r1pro">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{1 / PHYSICS_HZ:.8f}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <size memory="20M"/>
  <visual>
    <global offwidth="1024" offheight="1024"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6" numquads="1"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <map znear="0.01"/>
  </visual>
  <default>
    <joint damping="2" armature="0.1"/>
    <geom solref="0.01 1" friction="1 0.01 0.0005"/>
  </default>
  <asset>
    <material name="floor" rgba="0.62 0.58 0.52 1"/>
    {extra_assets}
  </asset>
  <worldbody>
    <light name="sun" pos="0 0 4" dir="0 0.2 -1" directional="true" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="floor" type="plane" size="20 20 10" material="floor" contype="{fc}" conaffinity="{fa}"/>
    {robot_body_xml()}
    {extra_worldbody}
  </worldbody>
  <actuator>
    {actuators_xml()}
  </actuator>
</mujoco>"""
