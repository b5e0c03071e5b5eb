"""Neural processes assembled from building blocks, their registry and serialisation."""
