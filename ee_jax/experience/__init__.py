"""Experience collection: expert trajectories, K explored alternatives per expert state, and reflections
(``ee-jax collect``); the records they write live in :mod:`ee_jax.records`."""
