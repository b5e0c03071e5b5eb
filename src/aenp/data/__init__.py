"""Tasks and generators: the Batch type and the experiments' data."""
