"""Work functions for tests/test_env_pool.py (imported by name inside the pool's worker processes)."""

import os


def crash_once(env, item):
    """Kill this worker the first time an item marked ``crash`` runs (a marker file remembers it)."""
    if item.get("crash") and not os.path.exists(item["marker"]):
        with open(item["marker"], "w") as f:
            f.write(str(os.getpid()))
        os._exit(3)
    with open(item["log"], "a") as f:  # one line per completed execution: duplicates would show here
        f.write(f"{item['value']}\n")
    return {"value": item["value"] * 2, "pid": os.getpid()}


def always_crash(env, item):
    os._exit(4)


def raise_error(env, item):
    if item["value"] == 11:
        raise ValueError(f"bad item {item['value']}")
    return item["value"]


def environ(env, item):
    return {"java_tool_options": os.environ.get("JAVA_TOOL_OPTIONS", ""), "env": env.name}


def allocate(env, item):
    """Hold ~item['mb'] MB so the pool's RSS bound triggers."""
    global _BALLAST
    _BALLAST = bytearray(item["mb"] * 1024 * 1024)
    return {"pid": os.getpid()}


_BALLAST = None
