"""Instructions generated from BDDL goals."""

from __future__ import annotations

import pytest

from behavior_gym.tasks.bddl_task import load_conditions
from behavior_gym.tasks.instructions import goal_instruction, load_instruction_file, pluralize


@pytest.mark.parametrize("noun,plural", [("can of soda", "cans of soda"), ("box", "boxes"), ("die", "dice"),
                                         ("apple half", "apple halves"), ("strawberry", "strawberries"),
                                         ("bok choy", "bok choy")])
def test_pluralize(noun, plural):
    assert pluralize(noun) == plural


def _instr(activity):
    c = load_conditions(activity)
    return goal_instruction(c.parsed_goal_conditions, c.parsed_objects, c.parsed_initial_conditions)


def test_generated_instructions_read_as_sentences():
    assert _instr("turning_on_radio") == "Turn on the radio."
    assert _instr("picking_up_trash") == "Put all the cans of soda in the trash can."
    assert _instr("bringing_in_wood") == "Put all the plywood boards on the corridor floor."
    assert "close all the fridges" in _instr("cleaning_up_plates_and_food")
    assert "a candle in each wicker basket" in _instr("assembling_gift_baskets")
    assert "next to, under or against the Christmas tree" in _instr("putting_up_Christmas_decorations_inside")


def test_bad_instruction_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_instruction_file(p)


def test_made_objects_are_made_not_real():
    """`(real ?pizza)` in a goal means the pizza was made; `future` that it is yet to be."""
    text = _instr("make_pizza")
    assert text == "Make the pizza and put the pizza on the cookie sheet."
    objects = {"pizza.n.01": ["pizza.n.01_1"], "dough.n.01": ["dough.n.01_1"]}
    assert goal_instruction([["not", ["real", "?dough.n.01_1"]]], objects) == "Use up the dough."
    assert goal_instruction([["future", "?pizza.n.01_1"]], objects) == ""
    assert "?" not in _instr("cook_a_frozen_pie") and "Hot" not in _instr("cook_a_frozen_pie")
