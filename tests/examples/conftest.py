import os

import pytest

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment", "config")


@pytest.fixture
def compose():
    """compose(config_name, overrides) -> the Hydra config, as train_embodied_agent.py gets it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def _compose(name, overrides=()):
        with initialize_config_dir(config_dir=os.path.abspath(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name=name, overrides=list(overrides))

    return _compose
