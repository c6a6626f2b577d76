"""What a BEHAVIOR object category looks like in the embedded backend: a shape, a size, a mass.

`CATEGORIES` maps WordNet-style synsets (the names BDDL uses, e.g. `can__of__soda.n.01`) to a
`CategorySpec`: a *kind* (how the scene builder makes it: a free `item`, an open `container`, a
flat `plate`, or a piece of furniture such as `table`, `cabinet`, `fridge`...), full extents in
metres (x = depth, along the furniture's facing direction; y = width; z = height), a mass and a
colour. Categories not in the table are resolved through the bddl object taxonomy: the nearest
hypernym that is in the table (breadth-first over `ObjectTaxonomy.get_parents`), so e.g.
`vidalia_onion.n.01` becomes an `onion.n.03`-like sphere and an unknown kind of cabinet still
gets a door. Substances (water, dust...) cannot be made of primitives and are refused.
"""

from __future__ import annotations

import functools
import hashlib
from collections import deque
from dataclasses import dataclass, replace

# Furniture kinds are welded to the world (doors and drawers still move); the rest are free bodies.
FIXTURE_KINDS = frozenset(
    {"table", "counter", "cabinet", "drawer_cabinet", "fridge", "dishwasher", "sink", "bookcase", "shelf",
     "bed", "sofa", "chair", "car", "tree", "rack", "block"}
)
FREE_KINDS = frozenset({"item", "container", "plate", "laptop"})
FLOOR_KINDS = frozenset({"floor"})
AGENT_KINDS = frozenset({"agent"})
SHAPES = ("box", "cylinder", "sphere", "ellipsoid", "capsule_x")


@dataclass(frozen=True)
class CategorySpec:
    """How to make one category. `size` = full extents (x depth, y width, z height) in metres."""

    kind: str
    size: tuple[float, float, float] = (0.08, 0.08, 0.08)
    mass: float = 0.2
    rgba: tuple[float, float, float, float] | None = None  # None: a stable colour from the name
    shape: str = "box"  # for items: box, cylinder (vertical axis), sphere, ellipsoid, capsule_x (lying)
    name: str = ""  # display name for instructions ("" = derived from the synset)
    toggleable: bool = False  # adds a push button (and an indicator light)

    @property
    def is_fixture(self) -> bool:
        return self.kind in FIXTURE_KINDS

    @property
    def is_free(self) -> bool:
        return self.kind in FREE_KINDS


def _c(r, g, b):
    return (r, g, b, 1.0)


WOOD, DARK_WOOD, WHITE, STEEL, GREY = _c(.62, .45, .28), _c(.42, .28, .17), _c(.92, .92, .9), _c(.7, .72, .74), \
    _c(.45, .46, .48)

IT, CT, PL = "item", "container", "plate"
CATEGORIES: dict[str, CategorySpec] = {
    # -- rooms and the robot ------------------------------------------------------------------
    "floor.n.01": CategorySpec("floor"),
    "lawn.n.01": CategorySpec("floor", name="lawn"),
    "agent.n.01": CategorySpec("agent", name="robot"),
    # -- furniture (fixtures) -----------------------------------------------------------------
    "table.n.02": CategorySpec("table", (0.6, 1.0, 0.72), 30, WOOD),
    "breakfast_table.n.01": CategorySpec("table", (0.7, 0.9, 0.72), 30, _c(.7, .55, .35)),
    "coffee_table.n.01": CategorySpec("table", (0.5, 0.9, 0.45), 20, DARK_WOOD),
    "desk.n.01": CategorySpec("table", (0.6, 1.1, 0.74), 35, _c(.55, .5, .45)),
    "tabletop.n.01": CategorySpec("table", (0.6, 1.0, 0.72), 30, _c(.5, .5, .45), name="workbench"),
    "countertop.n.01": CategorySpec("counter", (0.6, 1.2, 0.9), 80, _c(.85, .83, .78), name="countertop"),
    "cabinet.n.01": CategorySpec("cabinet", (0.5, 0.6, 0.85), 40, _c(.8, .75, .65)),
    "electric_refrigerator.n.01": CategorySpec("fridge", (0.6, 0.65, 1.3), 60, WHITE, name="fridge"),
    "dishwasher.n.01": CategorySpec("dishwasher", (0.6, 0.6, 0.85), 50, STEEL),
    "sink.n.01": CategorySpec("sink", (0.6, 0.8, 0.9), 60, _c(.8, .8, .82)),
    "bookcase.n.01": CategorySpec("bookcase", (0.32, 0.7, 1.15), 30, DARK_WOOD),
    "shelf.n.01": CategorySpec("shelf", (0.32, 0.8, 0.95), 20, WOOD),
    "bed.n.01": CategorySpec("bed", (0.9, 1.8, 0.5), 60, _c(.35, .45, .7)),
    "sofa.n.01": CategorySpec("sofa", (0.8, 1.6, 0.8), 50, _c(.45, .3, .3)),
    "chair.n.01": CategorySpec("chair", (0.45, 0.45, 0.9), 6, DARK_WOOD),
    "swivel_chair.n.01": CategorySpec("chair", (0.5, 0.5, 0.95), 10, _c(.15, .15, .18), name="office chair"),
    "car.n.01": CategorySpec("car", (1.1, 1.5, 1.0), 900, _c(.6, .1, .12)),
    "tree.n.01": CategorySpec("tree", (0.8, 0.8, 2.2), 100, _c(.2, .5, .2)),
    "christmas_tree.n.05": CategorySpec("tree", (0.9, 0.9, 1.8), 20, _c(.1, .45, .2), name="Christmas tree"),
    "hallstand.n.01": CategorySpec("rack", (0.32, 0.8, 0.5), 10, WOOD, name="shoe rack"),
    "chest_of_drawers.n.01": CategorySpec("drawer_cabinet", (0.45, 0.7, 0.8), 40, WOOD, name="chest of drawers"),
    # hypernyms, so that the taxonomy fallback lands on something sensible
    "furniture.n.01": CategorySpec("block", (0.5, 0.8, 0.8), 40, WOOD),
    "table.n.01": CategorySpec("table", (0.6, 1.0, 0.72), 30, WOOD),
    "seat.n.03": CategorySpec("chair", (0.45, 0.45, 0.9), 6, DARK_WOOD),
    "home_appliance.n.01": CategorySpec("cabinet", (0.55, 0.6, 0.85), 40, WHITE),
    "white_goods.n.01": CategorySpec("cabinet", (0.55, 0.6, 0.85), 40, WHITE),
    "storage_space.n.01": CategorySpec("cabinet", (0.5, 0.6, 0.85), 40, WOOD),
    "vehicle.n.01": CategorySpec("car", (1.1, 1.5, 1.0), 900, _c(.2, .3, .6)),
    "plant.n.02": CategorySpec("tree", (0.6, 0.6, 1.4), 20, _c(.25, .55, .25)),
    "woody_plant.n.01": CategorySpec("tree", (0.8, 0.8, 2.2), 100, _c(.2, .5, .2)),
    # -- containers (free) ------------------------------------------------------------------
    "ashcan.n.01": CategorySpec(CT, (0.32, 0.32, 0.4), 2.0, GREY, name="trash can"),
    "wicker_basket.n.01": CategorySpec(CT, (0.38, 0.3, 0.16), 0.8, _c(.75, .6, .35), name="wicker basket"),
    "basket.n.01": CategorySpec(CT, (0.36, 0.28, 0.16), 0.8, _c(.75, .6, .35)),
    "toy_box.n.01": CategorySpec(CT, (0.42, 0.3, 0.2), 1.5, _c(.3, .5, .85)),
    "box.n.01": CategorySpec(CT, (0.42, 0.32, 0.24), 1.0, _c(.72, .56, .38)),
    "packing_box.n.02": CategorySpec(CT, (0.3, 0.22, 0.14), 0.5, _c(.72, .56, .38), name="lunch box"),
    "toolbox.n.01": CategorySpec(CT, (0.46, 0.24, 0.16), 1.5, _c(.8, .15, .1)),
    "mixing_bowl.n.01": CategorySpec(CT, (0.28, 0.28, 0.1), 0.6, _c(.85, .85, .9)),
    "bowl.n.01": CategorySpec(CT, (0.16, 0.16, 0.06), 0.3, _c(.9, .88, .8)),
    "tupperware.n.01": CategorySpec(CT, (0.17, 0.13, 0.08), 0.2, _c(.75, .85, .9)),
    "sack.n.01": CategorySpec(CT, (0.32, 0.22, 0.24), 0.3, _c(.8, .7, .5), name="grocery bag"),
    "bag.n.04": CategorySpec(CT, (0.32, 0.22, 0.24), 0.3, _c(.8, .7, .5)),
    "container.n.01": CategorySpec(CT, (0.3, 0.22, 0.14), 0.5, _c(.3, .6, .7)),
    "receptacle.n.01": CategorySpec(CT, (0.25, 0.2, 0.1), 0.4),
    "storage_container.n.01": CategorySpec(CT, (0.4, 0.3, 0.2), 1.0, _c(.2, .45, .75)),
    "pencil_box.n.01": CategorySpec(CT, (0.22, 0.1, 0.05), 0.15, _c(.2, .6, .3)),
    "caldron.n.01": CategorySpec(CT, (0.18, 0.18, 0.14), 0.8, _c(.1, .1, .1), name="cauldron"),
    "pot.n.01": CategorySpec(CT, (0.22, 0.22, 0.12), 0.8, STEEL),
    "vessel.n.03": CategorySpec(CT, (0.16, 0.16, 0.1), 0.4),
    # -- flat supports (free) ---------------------------------------------------------------
    "plate.n.04": CategorySpec(PL, (0.2, 0.2, 0.015), 0.3, WHITE),
    "saucer.n.02": CategorySpec(PL, (0.14, 0.14, 0.015), 0.15, WHITE),
    "chopping_board.n.01": CategorySpec(PL, (0.40, 0.28, 0.02), 0.6, _c(.8, .65, .45)),  # room for four snacks
    "tray.n.01": CategorySpec(PL, (0.35, 0.25, 0.02), 0.4, GREY),
    "soap_dish.n.01": CategorySpec(PL, (0.12, 0.085, 0.025), 0.1, _c(.6, .8, .9)),
    # -- articulated items --------------------------------------------------------------------
    "laptop.n.01": CategorySpec("laptop", (0.25, 0.32, 0.02), 1.2, _c(.3, .3, .32)),
    # -- items (free) -------------------------------------------------------------------------
    "radio_receiver.n.01": CategorySpec(IT, (0.12, 0.24, 0.13), 1.5, _c(.2, .2, .22), name="radio", toggleable=True),
    "can__of__soda.n.01": CategorySpec(IT, (0.066, 0.066, 0.12), 0.2, _c(.85, .1, .1), "cylinder"),
    "pumpkin.n.02": CategorySpec(IT, (0.09, 0.09, 0.08), 0.3, _c(.95, .5, .1), "ellipsoid"),
    "candle.n.01": CategorySpec(IT, (0.05, 0.05, 0.1), 0.1, _c(.95, .92, .8), "cylinder"),
    "pillar_candle.n.01": CategorySpec(IT, (0.07, 0.07, 0.12), 0.2, _c(.95, .9, .75), "cylinder"),
    "pizza.n.01": CategorySpec(IT, (0.16, 0.16, 0.02), 0.2, _c(.9, .6, .3), "cylinder"),
    "mousetrap.n.01": CategorySpec(IT, (0.1, 0.05, 0.03), 0.05, _c(.8, .65, .4)),
    "easter_egg.n.01": CategorySpec(IT, (0.045, 0.045, 0.06), 0.05, _c(.6, .4, .85), "ellipsoid", "Easter egg"),
    "board_game.n.01": CategorySpec(IT, (0.2, 0.085, 0.05), 0.3, _c(.2, .4, .8)),
    "jigsaw_puzzle.n.01": CategorySpec(IT, (0.18, 0.08, 0.05), 0.25, _c(.85, .3, .5)),
    "tennis_ball.n.01": CategorySpec(IT, (0.067, 0.067, 0.067), 0.06, _c(.8, .95, .2), "sphere"),
    "toaster.n.02": CategorySpec(IT, (0.22, 0.09, 0.17), 1.0, STEEL),
    "food_processor.n.01": CategorySpec(IT, (0.085, 0.085, 0.22), 1.0, WHITE, "cylinder"),
    "french_press.n.01": CategorySpec(IT, (0.08, 0.08, 0.2), 0.5, _c(.6, .75, .8), "cylinder"),
    "wreath.n.01": CategorySpec(IT, (0.2, 0.2, 0.04), 0.2, _c(.1, .5, .2), "cylinder"),
    "candy_cane.n.01": CategorySpec(IT, (0.14, 0.025, 0.025), 0.03, _c(.9, .2, .2)),
    "gift_box.n.01": CategorySpec(IT, (0.16, 0.085, 0.1), 0.3, _c(.8, .1, .3), name="gift box"),
    "coffee_maker.n.01": CategorySpec(IT, (0.2, 0.2, 0.3), 2.5, _c(.15, .15, .15), name="coffee maker"),
    "bottle__of__coffee.n.01": CategorySpec(IT, (0.07, 0.07, 0.16), 0.4, _c(.35, .2, .1), "cylinder"),
    "paper_coffee_filter.n.01": CategorySpec(IT, (0.08, 0.08, 0.03), 0.01, _c(.95, .95, .9), "cylinder",
                                             "coffee filter"),
    "coffee_cup.n.01": CategorySpec(IT, (0.08, 0.08, 0.09), 0.2, WHITE, "cylinder", "coffee cup"),
    "mug.n.04": CategorySpec(IT, (0.08, 0.08, 0.1), 0.25, _c(.2, .5, .8), "cylinder"),
    "cup.n.01": CategorySpec(IT, (0.075, 0.075, 0.09), 0.15, WHITE, "cylinder"),
    "electric_kettle.n.01": CategorySpec(IT, (0.085, 0.085, 0.2), 0.8, STEEL, "cylinder", "kettle"),
    "half__apple.n.01": CategorySpec(IT, (0.07, 0.07, 0.04), 0.08, _c(.95, .9, .7), "ellipsoid", "apple half"),
    "apple.n.01": CategorySpec(IT, (0.075, 0.075, 0.075), 0.15, _c(.8, .1, .1), "sphere"),
    "orange.n.01": CategorySpec(IT, (0.075, 0.075, 0.075), 0.15, _c(.98, .55, .05), "sphere"),
    "club_sandwich.n.01": CategorySpec(IT, (0.1, 0.08, 0.05), 0.15, _c(.9, .8, .55), name="sandwich"),
    "bottle__of__tea.n.01": CategorySpec(IT, (0.06, 0.06, 0.18), 0.4, _c(.6, .4, .1), "cylinder"),
    "chocolate_chip_cookie.n.01": CategorySpec(IT, (0.065, 0.065, 0.02), 0.03, _c(.7, .5, .3), "cylinder", "cookie"),
    "tennis_racket.n.01": CategorySpec(IT, (0.45, 0.08, 0.035), 0.3, _c(.2, .2, .2)),
    "digital_camera.n.01": CategorySpec(IT, (0.11, 0.065, 0.07), 0.4, _c(.1, .1, .1), name="camera"),
    "beefsteak_tomato.n.01": CategorySpec(IT, (0.08, 0.08, 0.07), 0.2, _c(.85, .12, .1), "ellipsoid", "tomato"),
    "carton__of__milk.n.01": CategorySpec(IT, (0.07, 0.07, 0.2), 0.5, WHITE, name="milk carton"),
    "plywood.n.01": CategorySpec(IT, (0.45, 0.3, 0.03), 1.0, _c(.8, .65, .45), name="plywood board"),
    "bottle.n.01": CategorySpec(IT, (0.07, 0.07, 0.22), 0.5, _c(.4, .7, .9), "cylinder"),
    "sandal.n.01": CategorySpec(IT, (0.26, 0.09, 0.05), 0.2, _c(.5, .35, .2)),
    "gym_shoe.n.01": CategorySpec(IT, (0.28, 0.1, 0.1), 0.3, _c(.9, .9, .95), name="sneaker"),
    "shoe.n.01": CategorySpec(IT, (0.28, 0.1, 0.1), 0.3, _c(.3, .2, .1)),
    "book.n.02": CategorySpec(IT, (0.15, 0.05, 0.2), 0.4, _c(.6, .15, .15)),
    "paperback_book.n.01": CategorySpec(IT, (0.11, 0.03, 0.17), 0.2, _c(.2, .3, .6), name="paperback"),
    "notebook.n.01": CategorySpec(IT, (0.2, 0.085, 0.02), 0.15, _c(.2, .6, .4)),
    "bow.n.08": CategorySpec(IT, (0.08, 0.08, 0.04), 0.02, _c(.9, .1, .4)),
    "swiss_cheese.n.01": CategorySpec(IT, (0.1, 0.07, 0.05), 0.2, _c(.98, .85, .3), name="cheese"),
    "butter_cookie.n.01": CategorySpec(IT, (0.06, 0.06, 0.02), 0.02, _c(.9, .75, .45), "cylinder"),
    "bok_choy.n.02": CategorySpec(IT, (0.14, 0.06, 0.05), 0.15, _c(.4, .75, .3), "capsule_x"),
    "vidalia_onion.n.01": CategorySpec(IT, (0.07, 0.07, 0.065), 0.15, _c(.9, .85, .6), "sphere", "onion"),
    "onion.n.03": CategorySpec(IT, (0.07, 0.07, 0.065), 0.15, _c(.9, .8, .6), "sphere"),
    "sweet_corn.n.02": CategorySpec(IT, (0.16, 0.05, 0.05), 0.2, _c(.95, .85, .2), "capsule_x", "corn"),
    "broccoli.n.02": CategorySpec(IT, (0.09, 0.09, 0.09), 0.2, _c(.2, .55, .2), "ellipsoid"),
    "leek.n.02": CategorySpec(IT, (0.18, 0.04, 0.04), 0.15, _c(.6, .85, .5), "capsule_x"),
    "die.n.01": CategorySpec(IT, (0.04, 0.04, 0.04), 0.02, WHITE, name="die"),
    "teddy.n.01": CategorySpec(IT, (0.1, 0.08, 0.15), 0.2, _c(.6, .4, .2), "ellipsoid", "teddy bear"),
    "train_set.n.01": CategorySpec(IT, (0.2, 0.08, 0.08), 0.4, _c(.2, .4, .8), name="toy train"),
    "allen_wrench.n.01": CategorySpec(IT, (0.1, 0.025, 0.02), 0.05, GREY, name="allen wrench"),
    "drill.n.01": CategorySpec(IT, (0.18, 0.06, 0.16), 1.0, _c(.95, .6, .1)),
    "pliers.n.01": CategorySpec(IT, (0.18, 0.05, 0.02), 0.2, _c(.8, .1, .1)),
    "flashlight.n.01": CategorySpec(IT, (0.15, 0.04, 0.04), 0.15, _c(.1, .1, .1), "capsule_x"),
    "screwdriver.n.01": CategorySpec(IT, (0.18, 0.025, 0.025), 0.1, _c(.95, .8, .1), "capsule_x"),
    "bottle__of__detergent.n.01": CategorySpec(IT, (0.1, 0.07, 0.2), 0.8, _c(.2, .5, .9), name="detergent bottle"),
    "sanitary_napkin.n.01": CategorySpec(IT, (0.1, 0.06, 0.02), 0.02, _c(.95, .8, .9)),
    "deodorant__atomizer.n.01": CategorySpec(IT, (0.045, 0.045, 0.15), 0.15, _c(.3, .3, .7), "cylinder",
                                             "deodorant"),
    "lipstick.n.01": CategorySpec(IT, (0.022, 0.022, 0.07), 0.02, _c(.8, .1, .3), "cylinder"),
    "toothbrush.n.01": CategorySpec(IT, (0.18, 0.02, 0.02), 0.02, _c(.3, .7, .9)),
    "mouse.n.04": CategorySpec(IT, (0.1, 0.06, 0.035), 0.1, _c(.15, .15, .15), "ellipsoid", "computer mouse"),
    "keyboard.n.01": CategorySpec(IT, (0.36, 0.09, 0.025), 0.5, _c(.15, .15, .15)),
    "pen.n.01": CategorySpec(IT, (0.14, 0.014, 0.014), 0.01, _c(.1, .2, .7), "capsule_x"),
    "pencil.n.01": CategorySpec(IT, (0.17, 0.012, 0.012), 0.01, _c(.95, .8, .1), "capsule_x"),
    "folder.n.02": CategorySpec(IT, (0.24, 0.09, 0.02), 0.1, _c(.9, .7, .2)),
    "computer.n.01": CategorySpec(IT, (0.4, 0.2, 0.42), 8.0, _c(.2, .2, .22), name="computer tower"),
    "monitor.n.04": CategorySpec(IT, (0.12, 0.5, 0.35), 4.0, _c(.1, .1, .12)),
    "stapler.n.01": CategorySpec(IT, (0.15, 0.04, 0.05), 0.2, _c(.1, .1, .1)),
    "half__chicken.n.01": CategorySpec(IT, (0.12, 0.08, 0.07), 0.4, _c(.85, .6, .35), "ellipsoid", "half chicken"),
    "half__apple_pie.n.01": CategorySpec(IT, (0.12, 0.08, 0.04), 0.3, _c(.85, .65, .35), name="half apple pie"),
    "box__of__oatmeal.n.01": CategorySpec(IT, (0.14, 0.07, 0.2), 0.5, _c(.8, .6, .3), name="oatmeal box"),
    "bag__of__chips.n.01": CategorySpec(IT, (0.16, 0.06, 0.22), 0.15, _c(.95, .8, .1), name="bag of chips"),
    "bottle__of__olive_oil.n.01": CategorySpec(IT, (0.06, 0.06, 0.24), 0.6, _c(.5, .6, .1), "cylinder",
                                               "olive oil bottle"),
    "jar__of__sugar.n.01": CategorySpec(IT, (0.085, 0.085, 0.13), 0.5, WHITE, "cylinder", "sugar jar"),
    "cube.n.05": CategorySpec(IT, (0.05, 0.05, 0.05), 0.1, _c(.85, .15, .12), name="cube"),
    "block.n.01": CategorySpec(IT, (0.05, 0.05, 0.05), 0.1, _c(.2, .5, .85)),
    # hypernym defaults for the taxonomy fallback
    "edible_fruit.n.01": CategorySpec(IT, (0.075, 0.075, 0.075), 0.15, _c(.9, .5, .1), "sphere"),
    "vegetable.n.01": CategorySpec(IT, (0.08, 0.08, 0.08), 0.15, _c(.3, .7, .3), "ellipsoid"),
    "food.n.02": CategorySpec(IT, (0.09, 0.07, 0.05), 0.15, _c(.85, .7, .45)),
    "food.n.01": CategorySpec(IT, (0.09, 0.07, 0.05), 0.15, _c(.85, .7, .45)),
    "grocery.n.02": CategorySpec(IT, (0.08, 0.08, 0.14), 0.3, _c(.8, .4, .2)),
    "bottle.n.02": CategorySpec(IT, (0.07, 0.07, 0.2), 0.4, _c(.4, .7, .9), "cylinder"),
    "toy.n.03": CategorySpec(IT, (0.1, 0.07, 0.07), 0.15, _c(.9, .3, .3)),
    "tool.n.01": CategorySpec(IT, (0.16, 0.04, 0.03), 0.2, GREY),
    "hand_tool.n.01": CategorySpec(IT, (0.16, 0.04, 0.03), 0.2, GREY),
    "device.n.01": CategorySpec(IT, (0.12, 0.08, 0.06), 0.3, _c(.2, .2, .22)),
    "shoe.n.02": CategorySpec(IT, (0.28, 0.1, 0.1), 0.3, _c(.3, .2, .1)),
    "footwear.n.02": CategorySpec(IT, (0.28, 0.1, 0.1), 0.3, _c(.3, .2, .1)),
    "clothing.n.01": CategorySpec(IT, (0.2, 0.08, 0.04), 0.2, _c(.4, .5, .7)),
    "ball.n.01": CategorySpec(IT, (0.07, 0.07, 0.07), 0.06, _c(.9, .9, .2), "sphere"),
    "dish.n.01": CategorySpec(PL, (0.2, 0.2, 0.02), 0.3, WHITE),
    "crockery.n.01": CategorySpec(PL, (0.2, 0.2, 0.02), 0.3, WHITE),
    "artifact.n.01": CategorySpec(IT, (0.08, 0.08, 0.08), 0.2),
    "object.n.01": CategorySpec(IT, (0.08, 0.08, 0.08), 0.2),
}

# Room floor colours (rendered as flat regions; `inroom` names).
ROOM_COLORS = {
    "kitchen": (0.78, 0.78, 0.74, 1), "living_room": (0.66, 0.52, 0.38, 1), "dining_room": (0.6, 0.47, 0.35, 1),
    "bedroom": (0.6, 0.55, 0.65, 1), "childs_room": (0.55, 0.65, 0.75, 1), "bathroom": (0.82, 0.86, 0.9, 1),
    "corridor": (0.58, 0.56, 0.52, 1), "garage": (0.45, 0.45, 0.47, 1), "garden": (0.35, 0.6, 0.3, 1),
    "utility_room": (0.62, 0.62, 0.6, 1), "storage_room": (0.55, 0.55, 0.5, 1), "office": (0.5, 0.55, 0.6, 1),
    "playroom": (0.7, 0.6, 0.75, 1), "closet": (0.6, 0.55, 0.5, 1), "lobby": (0.65, 0.62, 0.58, 1),
    "empty_room": (0.65, 0.65, 0.65, 1), "television_room": (0.6, 0.5, 0.45, 1), "home_office": (0.5, 0.55, 0.6, 1),
}


class UnsupportedCategory(ValueError):
    """A category the embedded backend cannot make (a substance, or not a BDDL synset at all)."""


def synset_of(instance: str) -> str:
    """`can__of__soda.n.01_2` -> `can__of__soda.n.01`."""
    return instance.rsplit("_", 1)[0]


def display_name(synset: str) -> str:
    """Readable name for instructions: the table's `name`, else the synset's lemma with spaces."""
    spec = CATEGORIES.get(synset)
    if spec is not None and spec.name:
        return spec.name
    lemma = synset.split(".")[0]
    return lemma.replace("__", " ").replace("_", " ")


@functools.lru_cache(maxsize=1)
def taxonomy():
    from bddl.object_taxonomy import ObjectTaxonomy

    return ObjectTaxonomy()


def _color_for(name: str) -> tuple[float, float, float, float]:
    h = hashlib.md5(name.encode()).digest()
    return (0.25 + 0.65 * h[0] / 255, 0.25 + 0.65 * h[1] / 255, 0.25 + 0.65 * h[2] / 255, 1.0)


@functools.cache
def resolve(synset: str) -> CategorySpec:
    """The spec for `synset`: from the table, else from the nearest hypernym in the table.

    Raises `UnsupportedCategory` for substances and unknown synsets.
    """
    spec = CATEGORIES.get(synset)
    if spec is None:
        tax = taxonomy()
        if not tax.is_valid_synset(synset):
            raise UnsupportedCategory(f"{synset!r} is not a synset of the BEHAVIOR object taxonomy")
        if tax.get_substances(synset) and not tax.get_categories(synset):
            raise UnsupportedCategory(f"{synset!r} is a substance (particles or fluid), which primitives cannot make")
        spec = _from_hypernyms(synset, tax)
        abilities = tax.get_abilities(synset)
        if spec.is_free and "sceneObject" in abilities:
            # Scene objects (furniture, appliances) the table does not know: a block, or a cabinet if openable.
            spec = CATEGORIES["storage_space.n.01" if "openable" in abilities else "furniture.n.01"]
        if spec.kind == "item" and "fillable" in abilities:
            spec = replace(CATEGORIES["receptacle.n.01"], size=spec.size if min(spec.size) > 0.08 else (0.2, 0.16, 0.1))
        if "toggleable" in abilities and spec.kind == "item":
            spec = replace(spec, toggleable=True, size=tuple(max(s, 0.06) for s in spec.size))
        spec = replace(spec, name="", rgba=spec.rgba if synset in CATEGORIES else None)
    if spec.rgba is None:
        spec = replace(spec, rgba=_color_for(synset))
    return spec


def _from_hypernyms(synset: str, tax) -> CategorySpec:
    seen, queue = {synset}, deque([synset])
    while queue:
        s = queue.popleft()
        if s in CATEGORIES and s != synset:
            return CATEGORIES[s]
        for p in tax.get_parents(s):
            if p not in seen:
                seen.add(p)
                queue.append(p)
    return CATEGORIES["object.n.01"]
