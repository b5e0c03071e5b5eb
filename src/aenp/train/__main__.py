"""``python -m aenp.train [overrides]``, which ``aenp train`` runs: Hydra-driven training.

A module of its own so that multi-process launchers (Lightning's DDP, torchrun) can start the
same command again in every process.
"""

import hydra
from omegaconf import DictConfig

from aenp.train.run import CONFIG_DIR, CONFIG_NAME, train


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Trains the configured model."""
    print(f"Run directory: {train(cfg)}")


if __name__ == "__main__":
    main()
