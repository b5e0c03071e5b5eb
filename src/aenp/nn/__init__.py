"""Building blocks: MLPs, set convolutions, CNNs, attention and fixed inputs."""
