"""Predicates on constructed MuJoCo states: inside vs beside, on top vs under, open vs closed..."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from behavior_gym.tasks.categories import CategorySpec
from behavior_gym.tasks.predicates import MujocoState
from behavior_gym.tasks.scene_builder import Problem, build_scene

WORLD = """
<mujoco>
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.008333"/>
  <worldbody>
    <geom name="floor" type="plane" size="10 10 1" contype="1" conaffinity="4"/>
    <body name="fake_hand" pos="3 3 0.5">
      <geom name="left_finger1" type="box" size="0.01 0.01 0.03" pos="0 0.05 0" contype="2" conaffinity="4"/>
      <geom name="left_finger2" type="box" size="0.01 0.01 0.03" pos="0 -0.05 0" contype="2" conaffinity="4"/>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.fixture(scope="module")
def world():
    objects = {
        "cup.n.01": ["cup.n.01_1"],
        "box.n.01": ["box.n.01_1"],
        "table.n.02": ["table.n.02_1"],
        "cabinet.n.01": ["cabinet.n.01_1"],
        "radio_receiver.n.01": ["radio_receiver.n.01_1"],
        "floor.n.01": ["floor.n.01_1", "floor.n.01_2"],
    }
    init = [["inroom", "table.n.02_1", "kitchen"], ["inroom", "cabinet.n.01_1", "kitchen"],
            ["inroom", "floor.n.01_1", "kitchen"], ["inroom", "floor.n.01_2", "garage"]]
    overrides = {"cabinet.n.01_1": CategorySpec("drawer_cabinet", (0.45, 0.6, 0.8), 40, (0.6, 0.4, 0.3, 1)),
                 "cup.n.01_1": CategorySpec("item", (0.06, 0.06, 0.08), 0.1, (1, 1, 1, 1), "cylinder")}
    spec = mujoco.MjSpec.from_string(WORLD)
    scene = build_scene(spec, Problem(objects, init, overrides), instance_id=0)
    model = spec.compile()
    data = mujoco.MjData(model)
    return scene, model, data, MujocoState(scene, model)


def _place(model, data, scene, name, xyz, yaw=0.0):
    adr = model.jnt_qposadr[model.joint(scene.objects[name].freejoint).id]
    data.qpos[adr:adr + 7] = (*xyz, math.cos(yaw / 2), 0, 0, math.sin(yaw / 2))


def _park_all(model, data, scene):
    for k, o in enumerate(scene.free_objects()):
        _place(model, data, scene, o.name, (5 + k, -5, 0.3))


def _settle(model, data, state, steps=120):
    data.qvel[:] = 0
    mujoco.mj_forward(model, data)
    mujoco.mj_step(model, data, nstep=steps)
    state.update(data)


def _q(state, pred, *names):
    return state.evaluate(pred, *(state.index[n] for n in names))


def _table_top(scene):
    t = scene.objects["table.n.02_1"]
    x, y, yaw = t.pose
    return np.array([x, y]), t.spec.size[2], yaw


def test_cup_inside_vs_beside_box(world):
    scene, model, data, state = world
    mujoco.mj_resetData(model, data)
    _park_all(model, data, scene)
    box = scene.objects["box.n.01_1"]
    floor_y = -1.5  # one of the two rooms; which floor is checked below
    _place(model, data, scene, "box.n.01_1", (0.0, floor_y, box.half[2] + 0.001))
    _place(model, data, scene, "cup.n.01_1", (0.0, floor_y, 0.01 + 0.04 + 0.002))  # on the box's floor
    _settle(model, data, state)
    assert _q(state, "inside", "cup.n.01_1", "box.n.01_1")
    assert not _q(state, "inside", "box.n.01_1", "cup.n.01_1")
    assert _q(state, "touching", "cup.n.01_1", "box.n.01_1")
    # Beside the box on the floor: not inside, next to, on the floor.
    _place(model, data, scene, "cup.n.01_1", (0.0, floor_y + box.half[1] + 0.04, 0.041))
    _settle(model, data, state)
    assert not _q(state, "inside", "cup.n.01_1", "box.n.01_1")
    assert _q(state, "nextto", "cup.n.01_1", "box.n.01_1")
    room_of_floor1 = scene.floor_room("floor.n.01_1")
    on_floor1 = room_of_floor1.contains(0.0, floor_y)
    assert _q(state, "ontop", "cup.n.01_1", "floor.n.01_1") == on_floor1
    assert _q(state, "ontop", "cup.n.01_1", "floor.n.01_2") == (not on_floor1)
    assert _q(state, "touching", "cup.n.01_1", "floor.n.01_1") == on_floor1
    # Far away: neither.
    _place(model, data, scene, "cup.n.01_1", (0.8, floor_y, 0.041))
    _settle(model, data, state)
    assert not _q(state, "nextto", "cup.n.01_1", "box.n.01_1")


def test_cup_ontop_vs_under_table(world):
    scene, model, data, state = world
    mujoco.mj_resetData(model, data)
    _park_all(model, data, scene)
    xy, h, _ = _table_top(scene)
    _place(model, data, scene, "cup.n.01_1", (xy[0], xy[1], h + 0.041))
    _settle(model, data, state)
    assert _q(state, "ontop", "cup.n.01_1", "table.n.02_1")
    assert not _q(state, "under", "cup.n.01_1", "table.n.02_1")
    assert not _q(state, "ontop", "table.n.02_1", "cup.n.01_1")
    assert not _q(state, "inside", "cup.n.01_1", "table.n.02_1")
    _place(model, data, scene, "cup.n.01_1", (xy[0], xy[1], 0.041))
    _settle(model, data, state)
    assert _q(state, "under", "cup.n.01_1", "table.n.02_1")
    assert not _q(state, "ontop", "cup.n.01_1", "table.n.02_1")
    assert not _q(state, "inside", "cup.n.01_1", "table.n.02_1")


def test_drawer_open_vs_closed_and_inside_drawer(world):
    scene, model, data, state = world
    mujoco.mj_resetData(model, data)
    _park_all(model, data, scene)
    cab = scene.objects["cabinet.n.01_1"]
    slide = cab.openables[0]
    adr = model.jnt_qposadr[model.joint(slide.joint).id]
    _settle(model, data, state, steps=2)
    assert _q(state, "closed", "cabinet.n.01_1")
    assert not _q(state, "open", "cabinet.n.01_1")
    data.qpos[adr] = 0.8 * slide.open_value
    mujoco.mj_forward(model, data)
    state.update(data)
    assert _q(state, "open", "cabinet.n.01_1")
    assert not _q(state, "closed", "cabinet.n.01_1")
    # A cup in the (open) drawer is inside the cabinet; closing the drawer keeps it inside.
    cav = cab.cavities[0]
    bid = model.body(cav.body).id
    centre = data.xpos[bid] + data.xmat[bid].reshape(3, 3) @ np.array(cav.center)
    _place(model, data, scene, "cup.n.01_1", (centre[0], centre[1], centre[2] - cav.half[2] + 0.042))
    mujoco.mj_forward(model, data)
    state.update(data)
    assert _q(state, "inside", "cup.n.01_1", "cabinet.n.01_1")


def test_toggle_button_latches(world):
    scene, model, data, state = world
    mujoco.mj_resetData(model, data)
    _park_all(model, data, scene)
    radio = scene.objects["radio_receiver.n.01_1"]
    adr = model.jnt_qposadr[model.joint(radio.button_joint).id]
    mujoco.mj_forward(model, data)
    state.update(data)
    assert not _q(state, "toggled_on", "radio_receiver.n.01_1")
    for expected in (True, False, True):
        data.qpos[adr] = -0.9 * 0.008  # pressed
        state.update(data)
        state.update(data)  # holding the button down does not flip it again
        data.qpos[adr] = 0.0  # released
        state.update(data)
        assert _q(state, "toggled_on", "radio_receiver.n.01_1") is expected


def test_grasped_needs_both_fingers(world):
    scene, model, data, state = world
    mujoco.mj_resetData(model, data)
    _park_all(model, data, scene)
    agent = state.index.get("agent.n.01_1")
    assert agent is None  # no agent in this scene: grasped is checked through the finger geoms directly
    cup = state.index["cup.n.01_1"]
    hand = model.body("fake_hand").id
    # Cup (radius 3 cm) between fingers 5 cm off centre (1 cm half-thickness): touching both.
    mujoco.mj_forward(model, data)
    pos = data.xpos[hand].copy()
    _place(model, data, scene, "cup.n.01_1", (pos[0], pos[1], pos[2]))
    # Close the (welded) fingers on the cup by moving their geoms inwards.
    g1, g2 = model.geom("left_finger1").id, model.geom("left_finger2").id
    model.geom_pos[g1][1], model.geom_pos[g2][1] = 0.035, -0.035
    mujoco.mj_forward(model, data)
    state.update(data)
    assert state.grasped(-1, cup)
    model.geom_pos[g2][1] = -0.2
    mujoco.mj_forward(model, data)
    state.update(data)
    assert not state.grasped(-1, cup)
    model.geom_pos[g1][1], model.geom_pos[g2][1] = 0.05, -0.05


def test_touching_sees_this_step_s_positions_without_contacts(world):
    """A refresh drops every box of the last step: a cup moved to 1 mm from the box (no simulated contact
    yet) touches it even when the first query of the step is the geom broad phase (the geoms' boxes were
    once kept from the step they were first computed in)."""
    scene, model, data, state = world
    mujoco.mj_resetData(model, data)
    _park_all(model, data, scene)
    box = scene.objects["box.n.01_1"]
    _place(model, data, scene, "box.n.01_1", (0.0, -1.5, 0.5))
    _place(model, data, scene, "cup.n.01_1", (0.0, -1.0, 0.5))
    mujoco.mj_forward(model, data)
    state.update(data)
    assert not _q(state, "touching", "cup.n.01_1", "box.n.01_1")
    _place(model, data, scene, "cup.n.01_1", (0.0, -1.5 + box.half[1] + 0.03 + 0.001, 0.5))  # cup radius 3 cm
    mujoco.mj_forward(model, data)
    state.update(data)
    assert ("cup.n.01_1", "box.n.01_1") not in {(state.names[a], state.names[b]) for a, b in state._contact_map()}
    assert _q(state, "touching", "cup.n.01_1", "box.n.01_1")
