"""The built-in text worlds, each with its oracle: coin, household (ALFWorld-like), shop (WebShop-like),
tools (BFCL-like), travel (TravelPlanner-like). Registered by name in :mod:`ee_jax.envs.registry`."""
