"""The tools world (BFCL-like): the environment (env), its file-system API (api) and task generator (tasks)."""
