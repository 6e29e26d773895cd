"""The household world (ALFWorld-like): the environment (env) over its simulated house (world)."""
