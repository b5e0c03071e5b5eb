"""``python -m aenp.train [overrides]``, which ``aenp train`` runs: Hydra-driven training.

A module of its own so that multi-process launchers (Lightning's DDP, torchrun) can start the
same command again in every process.
"""

import sys

import hydra
from omegaconf import DictConfig

from aenp.errors import AenpError
from aenp.train.run import CONFIG_DIR, CONFIG_NAME, train


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Trains the configured model; a deliberate error ends it with its message (status 2)."""
    try:
        run_dir = train(cfg)
    except AenpError as error:
        print(f"aenp train: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"Run directory: {run_dir}")


if __name__ == "__main__":
    main()
