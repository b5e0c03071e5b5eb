"""Training: the Lightning module, the task data module and the Hydra-driven entry point."""
