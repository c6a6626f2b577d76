"""Natural-language instructions from BDDL goals, and user-supplied instruction files.

bddl's own `get_natural_goal_conditions` writes one line per predicate in a logician's voice
("for every can__of__soda, the can__of__soda is inside ashcan1"). `goal_instruction` walks the same
parsed goal and writes one imperative sentence a person would say: "Put all the cans of soda in
the trash can." Quantifiers become determiners (`forall` -> "all the", `exists` -> "a",
`forn` -> a number, `forpairs` -> "a ... each ..."), negations become the opposite verb
("close", "turn off", "take ... out of"). Objects a task makes (`real`, `future` in BDDL) are
made ("Make the pizza"); states the backend does not simulate still read as words ("make the apple
pie hot").

`load_instruction_file(path)` reads a user's own mapping, JSON (`{task: instruction}`) or JSONL
(one `{"task": ..., "instruction": ...}` or `{task: instruction}` object per line).
"""

from __future__ import annotations

import json
import os
import re

from behavior_gym.tasks.categories import display_name, synset_of

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_IRREGULAR = {"die": "dice", "half": "halves", "shelf": "shelves", "knife": "knives", "leaf": "leaves",
              "person": "people", "mouse": "mice", "bok choy": "bok choy", "corn": "corn", "cheese": "cheese",
              "plywood board": "plywood boards", "teddy bear": "teddy bears", "sheep": "sheep"}


def pluralize(noun: str) -> str:
    if " of " in noun:
        head, tail = noun.split(" of ", 1)
        return f"{pluralize(head)} of {tail}"
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    words = noun.split(" ")
    last = words[-1]
    if last in _IRREGULAR:
        words[-1] = _IRREGULAR[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        words[-1] = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        words[-1] = last[:-1] + "ies"
    else:
        words[-1] = last + "s"
    return " ".join(words)


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


class _Namer:
    """Noun phrases for object instances and quantified variables."""

    def __init__(self, objects: dict[str, list[str]], rooms: dict[str, str], adjectives: dict[str, str],
                 names: dict[str, str]):
        self.objects = objects
        self.rooms = rooms
        self.adjectives = adjectives
        self.names = names  # synset -> display override
        self.vars: dict[str, dict] = {}

    def noun(self, synset: str) -> str:
        if synset in self.names:
            return self.names[synset]
        return display_name(synset)

    def instance(self, inst: str) -> str:
        synset = synset_of(inst)
        if synset in ("floor.n.01",):
            room = self.rooms.get(inst)
            return f"the {room.replace('_', ' ')} floor" if room else "the floor"
        if synset == "agent.n.01":
            return "you"
        noun = self.noun(synset)
        adj = self.adjectives.get(inst)
        if adj:
            return f"the {adj} {noun}"
        siblings = [x for x in self.objects.get(synset, []) if not x.endswith("_*")]
        if len(siblings) <= 1:
            return f"the {noun}"
        try:
            k = int(inst.rsplit("_", 1)[1]) - 1
            return f"the {ORDINALS[k]} {noun}" if 0 <= k < len(ORDINALS) else f"{noun} {k + 1}"
        except ValueError:
            return f"the {noun}"

    def term(self, term: str) -> str:
        name = term.lstrip("?")
        if term.startswith("?") and name in self.vars:
            v = self.vars[name]
            if v["mentioned"] and v.get("pronoun"):
                return v["pronoun"]
            v["mentioned"] = True
            return v["phrase"]
        return self.instance(name)

    def bind(self, var: str, phrase: str, pronoun: str | None):
        self.vars[var.lstrip("?")] = {"phrase": phrase, "pronoun": pronoun, "mentioned": False}

    def rebind_definite(self, var: str, phrase: str):
        self.vars[var.lstrip("?")] = {"phrase": phrase, "pronoun": None, "mentioned": False}


_VERBS = {
    "ontop": ("put {a} on {b}", "take {a} off {b}"),
    "inside": ("put {a} in {b}", "take {a} out of {b}"),
    "nextto": ("place {a} next to {b}", "move {a} away from {b}"),
    "under": ("put {a} under {b}", "move {a} out from under {b}"),
    "touching": ("make {a} touch {b}", "keep {a} off {b}"),
    "toggled_on": ("turn on {a}", "turn off {a}"),
    "open": ("open {a}", "close {a}"),
    "closed": ("close {a}", "open {a}"),
    "grasped": ("hold {b}", "let go of {b}"),
}
# Objects that a task makes or uses up: `(real ?pizza)` in a goal means "the pizza exists"
# (it was made), `(future ?pizza)` that it does not exist yet. Negated, `real` means it was used up.
_EXISTENCE = {"real": ("make {a}", "use up {a}"), "future": ("", "make {a}")}
# Other BEHAVIOR states the embedded backend does not simulate, phrased so that every catalogue
# activity reads as a sentence even where it cannot run.
_STATES = {
    "cooked": "cooked", "hot": "hot", "frozen": "frozen", "on_fire": "on fire", "folded": "folded",
    "unfolded": "unfolded", "broken": "broken", "sliced": "sliced", "diced": "diced", "soaked": "soaked",
    "dusty": "dusty", "stained": "stained",
}
_BINARY_STATES = {
    "covered": ("cover {a} with {b}", "clean {b} off {a}"),
    "filled": ("fill {a} with {b}", "empty {b} out of {a}"),
    "contains": ("put {b} in {a}", "take {b} out of {a}"),
    "saturated": ("soak {a} with {b}", "dry {b} off {a}"),
    "attached": ("attach {a} to {b}", "detach {a} from {b}"),
    "draped": ("drape {a} over {b}", "take {a} off {b}"),
    "overlaid": ("lay {a} over {b}", "take {a} off {b}"),
}
for _name, _adj in _STATES.items():
    _VERBS[_name] = (f"make {{a}} {_adj}", f"make sure {{a}} is not {_adj}")
_VERBS.update(_BINARY_STATES)
_VERBS.update(_EXISTENCE)
_PREPOSITIONS = {"ontop": "on", "inside": "in", "nextto": "next to", "under": "under", "touching": "against"}


_LOGIC = frozenset({"and", "or", "not", "imply", "forall", "exists", "forn", "forpairs", "fornpairs"})


def _is_atom(t) -> bool:
    return isinstance(t, list) and t and isinstance(t[0], str) and all(isinstance(x, str) for x in t) \
        and (t[0] in _VERBS or t[0] not in _LOGIC)



def _render(t, nm: _Namer, negated: bool = False) -> str:
    op = t[0]
    if _is_atom(t):
        # A predicate without a phrasing of its own: "make the X <predicate> the Y".
        word = op.replace("_", " ")
        pos, neg = _VERBS.get(op, (f"make {{a}} {word} {{b}}", f"make sure {{a}} is not {word} {{b}}"))
        args = [nm.term(x) for x in t[1:]]
        tpl = neg if negated else pos
        return tpl.format(a=args[0], b=args[1] if len(args) > 1 else "").strip()
    if op == "not":
        return _render(t[1], nm, not negated)
    if op == "and":
        parts = [_render(s, nm, negated) for s in t[1:]]
        return _join(parts, "or" if negated else "and")
    if op == "or":
        atoms = t[1:]
        if all(_is_atom(s) and len(s) == 3 and s[1:] == atoms[0][1:] and s[0] in _PREPOSITIONS for s in atoms) \
                and not negated:
            a, b = nm.term(atoms[0][1]), nm.term(atoms[0][2])
            preps = [_PREPOSITIONS[s[0]] for s in atoms]
            return f"put {a} {_join(preps, 'or')} {b}"
        parts = [_render(s, nm, negated) for s in atoms]
        return ("either " if not negated else "") + _join(parts, "and" if negated else "or")
    if op == "imply":
        return f"{_render(t[2], nm, negated)} if {_render(t[1], nm)}"
    if op in ("forall", "exists"):
        var, _, cat = t[1]
        noun = nm.noun(cat)
        universal = (op == "forall") != negated
        if universal:
            nm.bind(var, f"all the {pluralize(noun)}", "them")
        else:
            nm.bind(var, f"{_article(noun)} {noun}", "it")
            body = _render(t[2], nm, False if op == "exists" else negated)
            nm.rebind_definite(var, f"that {noun}")
            return body
        return _render(t[2], nm, False if op == "forall" else negated)
    if op == "forn":
        n = t[1][0]
        var, _, cat = t[2]
        noun = nm.noun(cat)
        nm.bind(var, f"{n} {pluralize(noun) if n != '1' else noun}", "them" if n != "1" else "it")
        return _render(t[3], nm, negated)
    if op in ("forpairs", "fornpairs"):
        off = 1 if op == "fornpairs" else 0
        (v1, _, c1), (v2, _, c2) = t[1 + off], t[2 + off]
        n1, n2 = nm.noun(c1), nm.noun(c2)
        if op == "fornpairs":
            nm.bind(v1, f"{t[1][0]} {pluralize(n1)}", None)
            nm.bind(v2, f"{_article(n2)} {n2}", None)
        else:
            nm.bind(v1, f"each {n1}", None)
            nm.bind(v2, f"{_article(n2)} {n2}", None)
        return _render(t[3 + off], nm, negated)
    return " ".join(str(x) for x in t)


def _join(parts: list[str], conj: str) -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" {conj} " + parts[-1]


def goal_instruction(goal: list, objects: dict[str, list[str]], init: list | None = None,
                     adjectives: dict[str, str] | None = None, names: dict[str, str] | None = None) -> str:
    """One imperative sentence for a parsed BDDL goal (the list of top-level conditions)."""
    rooms = {lit[1]: lit[2] for lit in (init or []) if lit and lit[0] == "inroom"}
    nm = _Namer(objects, rooms, adjectives or {}, names or {})
    clauses = []
    for cond in goal:
        nm.vars.clear()
        text = _render(cond, nm)
        if text and text not in clauses:
            clauses.append(text)
    sentence = _join(clauses, "and")
    sentence = re.sub(r"\s+", " ", sentence).strip()
    return (sentence[:1].upper() + sentence[1:] + ".") if sentence else ""


def bddl_natural_goal(conds) -> str:
    """bddl's own rendering (`get_natural_goal_conditions`), flattened to one line."""
    from bddl.activity import get_natural_goal_conditions

    lines = get_natural_goal_conditions(conds)
    return "; ".join(re.sub(r"\s+", " ", line).strip() for line in lines)


def load_instruction_file(path: str | os.PathLike) -> dict[str, str]:
    """Read `{task_name: instruction}` from a JSON object or a JSONL file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out: dict[str, str] = {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # not one JSON document: JSON Lines
    if data is not None:
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{task_name: instruction}} or JSON Lines")
        items = list(data.items())
        if set(data) == {"task", "instruction"}:
            items = [(data["task"], data["instruction"])]
    else:
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object")
            if "instruction" in row and ("task" in row or "task_name" in row):
                items.append((row.get("task", row.get("task_name")), row["instruction"]))
            else:
                items.extend(row.items())
    for task, instruction in items:
        if not isinstance(instruction, str):
            raise ValueError(f"{path}: the instruction for {task!r} is not a string: {instruction!r}")
        out[str(task)] = instruction
    return out

