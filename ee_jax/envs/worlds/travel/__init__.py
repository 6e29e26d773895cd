"""The travel world (TravelPlanner-like): the environment (env) over its seeded catalog (catalog)."""
