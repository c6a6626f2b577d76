"""Potential-based reward shaping for the pick-style skills (embedded backend).

BEHAVIOR's potential reward counts goal predicates; pick_and_place, stacking and rearrangement have
one each, so their reward is the success itself and RL from a policy that never succeeds has
nothing to reinforce. `ManipulationShaping` adds ``coef * (phi(s') - phi(s)) / PHI_MAX`` with a
staged potential over the object the skill moves and the object it goes to:

    phi = (1 - tanh(10 * hand-object distance))        reach: up to 1
        + 2 * lifted                                    object 2 cm above where it started
        + 2 * lifted * (1 - tanh(5 * object-target xy)) carried over the target: up to 2
    phi = PHI_MAX (5) once the goal holds              so putting it down is not a loss

Shaping of this form leaves the optimal policies unchanged (Ng et al., 1999); over an episode it
adds at most ``coef``. `info["shaping"]` holds the step's shaping term, `info["phi"]` the potential.
Other tasks pass through unchanged (`supports(task)` says which are shaped).
"""

from __future__ import annotations

import math

import gymnasium as gym

PHI_MAX = 5.0
LIFT = 0.02  # metres above its starting height that count as lifted
SHAPED_TASKS = ("pick_and_place", "stacking", "rearrangement")


def supports(task: str) -> bool:
    return task in SHAPED_TASKS


def moved_and_target(task) -> tuple[str, str]:
    """The object a pick-style skill moves and the one it goes to (bowl/plate, lower cube, neighbour)."""
    names = [o.name for o in task.scene.objects.values() if o.role == "free"]
    target = next((n for n in names if n.startswith(("bowl", "plate"))), None)
    if target is not None:
        return next(n for n in names if n != target), target
    goal = task.conds.parsed_goal_conditions[0]  # (ontop|nextto ?moved ?target)
    return goal[1].lstrip("?"), goal[2].lstrip("?")


class SkillProgress:
    """How far a pick-style skill has come, read from the embedded backend's MuJoCo state: the closest
    hand's distance to the moved object, how high the object has risen since this was built, and its
    horizontal distance to the target (all in metres)."""

    def __init__(self, backend):
        self.backend = backend
        self.moved, self.target = moved_and_target(backend.task)
        st = self._state()
        self.z0 = float(st.aabb(st.index[self.moved])[0][2])

    def _state(self):
        """The task's state at the backend's data: as the goal check of this control step left it, else
        refreshed (its object boxes are computed once per step, not once per reader)."""
        st = self.backend.task.state
        st.refresh(self.backend.data)
        return st

    def __call__(self) -> tuple[float, float, float]:
        data, idx = self.backend.data, self.backend.idx
        st = self._state()
        lo, hi = st.aabb(st.index[self.moved])
        tlo, thi = st.aabb(st.index[self.target])
        c = ((lo + hi) / 2).tolist()
        reach = min(math.dist(data.site_xpos[idx.eef_site[arm]].tolist(), c) for arm in ("left", "right"))
        return reach, float(lo[2] - self.z0), math.dist(c[:2], ((tlo[:2] + thi[:2]) / 2).tolist())


class ManipulationShaping(gym.Wrapper):
    """Adds the staged potential's change to the reward of pick_and_place, stacking and rearrangement."""

    def __init__(self, env: gym.Env, coef: float = 1.0):
        super().__init__(env)
        if coef < 0:
            raise ValueError(f"reward shaping coef must be >= 0, got {coef}")
        self.coef = float(coef)
        self.active = supports(getattr(env.unwrapped, "task", None) or "")
        self._phi = 0.0
        self._progress: SkillProgress | None = None

    def potential(self, success: bool = False) -> float:
        if success:
            return PHI_MAX
        reach, lift, to_target = self._progress()
        lifted = lift > LIFT
        return (1 - math.tanh(10 * reach)) + 2.0 * lifted + 2.0 * lifted * (1 - math.tanh(5 * to_target))

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self.active:
            self._progress = SkillProgress(self.env.unwrapped.backend)
            self._phi = self.potential()
            info["phi"] = self._phi
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.active:
            phi = self.potential(bool(info.get("success")))
            shaping = self.coef * (phi - self._phi) / PHI_MAX
            self._phi = phi
            info["phi"], info["shaping"] = phi, shaping
            reward = float(reward) + shaping
        return obs, reward, terminated, truncated, info
