"""What the stage commands (collect_demos, sft, evaluate) share: typed configs with clear errors."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


def typed_config(cfg: DictConfig, schema: type, name: str) -> Any:
    """`cfg` checked against the dataclass `schema` (unknown keys, wrong types): the typed object, or
    exit status 2 with the key and the problem."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        print(f"{name}: config key {key}: {e.msg.splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


def fail(name: str, key: str, msg: str) -> None:
    print(f"{name}: config key {key}: {msg}", file=sys.stderr)
    sys.exit(2)
