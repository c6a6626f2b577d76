"""A metrics recorder for trainer tests: every dump of an SB3 logger, key -> list of values."""

from __future__ import annotations

from stable_baselines3.common.logger import KVWriter, Logger


class Recorder(KVWriter):
    """Keeps every dump (key -> list of values) for assertions."""

    def __init__(self):
        self.values: dict[str, list] = {}

    def write(self, key_values, key_excluded, step=0):
        for k, v in key_values.items():
            self.values.setdefault(k, []).append(v)

    def close(self):
        pass


def recorded(model) -> Recorder:
    """Replace `model`'s logger by one that records into the returned `Recorder`."""
    rec = Recorder()
    model.set_logger(Logger(folder=None, output_formats=[rec]))
    return rec
