"""The shop world (WebShop-like): the environment (env) over its seeded catalog (catalog)."""
