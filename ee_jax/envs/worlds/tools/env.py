"""``tools``: BFCL-v3-like multi-turn function calling against a simulated file system and messaging service.

Actions are JSON calls, ``{"name": "mkdir", "arguments": {"dir_name": "reports"}}`` (open action space).
A task is a sequence of user requests; each is checked on the state (files and sent messages) and, once
met, the next one is revealed. Score = fraction of requests completed; won = all of them.

State checking: the target of a request is the ground-truth state over every path that existed at the
start or that the task touches, plus the required messages. Extra files the agent creates elsewhere are
harmless; deleting or changing a file the task did not ask to change blocks the request until it is
restored (the observation then says which path). Nothing is irreversible: any file can be rewritten
and wrong messages do not count against the agent, so the oracle recovers from every deviation.

Splits: train/valid/test use the ``base`` variant; ``ood`` cycles through the BFCL variants
``missing_function`` (one of cp, mv, wc, grep, touch is absent and a request needs it: compose it, e.g.
cat + write_file), ``missing_parameter`` (one request omits a value; ``ask_user`` reveals it) and
``long_context`` (a directory of 60-90 distractor files, a long log and a long inbox; results are
truncated at 1200 instead of 400 characters, with a note). ``task.param("variant")`` names it.
"""

from __future__ import annotations

import json
import posixpath

from ee_jax.envs.base import Env, EnvError, Task
from ee_jax.envs.worlds.tools.api import HOME, CallError, ToolError, World, norm, parent, parse_call, signature
from ee_jax.envs.worlds.tools.tasks import OOD_VARIANTS, VARIANTS, Scenario, generate, message_ok, satisfied, violations

_EXAMPLE = '{"name": "cd", "arguments": {"folder": "docs"}}'


def _rel(cwd: str, path: str) -> str:
    """How the oracle names ``path`` from ``cwd``: relative, or from ``~`` when that is shorter to read."""
    r = posixpath.relpath(path, cwd)
    if r.startswith("../.."):
        return "~" + path[len(HOME):]
    return r


def _remove(w: World, p: str) -> tuple[str, dict, str]:
    """rm ``p``, or first its deepest descendant when ``p`` is a non-empty directory."""
    inside = w.descendants(p)
    leaf = max(inside, key=lambda q: (q.count("/"), q)) if inside else p
    return "rm", {"path": leaf}, parent(leaf)


def plan(scen: Scenario, t: int, w: World) -> tuple[str, dict, str | None] | None:
    """The expert's next call for request ``t`` from the current state, as (function, arguments with
    absolute paths, directory to work in). Order: gather the information the request needs, create
    missing directories, fix files (mv/cp from a file that already holds the content, append, write),
    remove what must be absent, send the required messages."""
    turn = scen.turns[t]
    avail = scen.functions
    target = {p: (kind, content) for p, kind, content in turn.target}

    def holds(p: str) -> bool:
        kind, content = target.get(p, (None, None))
        return w.is_file(p) and (kind != "file" or norm(w.fs[p]) == content)

    for need in turn.needs:
        if any(k in w.known for k in need.keys) or (need.src and not holds(need.src)):
            continue  # known already, or its source must be repaired first
        fn, args = next((f, dict(a)) for f, a in need.calls if f in avail)
        return fn, args, need.src and parent(need.src)
    bad = violations(turn, w)
    for p, kind, _ in sorted(bad, key=lambda v: (v[0].count("/"), v[0])):
        if kind == "dir":
            return ("rm", {"path": p}, parent(p)) if p in w.fs else ("mkdir", {"dir_name": p}, parent(p))
    for p, kind, content in bad:
        if kind != "file":
            continue
        if w.is_dir(p):
            return _remove(w, p)
        same = sorted((s for s in w.fs if s != p and content and w.is_file(s) and norm(w.fs[s]) == content),
                      key=lambda s: (s not in turn.own, s))  # the file the request names comes first
        spare = [s for s in same if target.get(s, ("absent",))[0] == "absent"]
        if same:
            src, fn = (spare[0], "mv") if spare else (same[0], "cp")
            if fn in avail:
                return fn, {"source": src, "destination": p}, parent(src)
            if "cat:" + src not in w.known:  # compose the missing function: read, then write
                return "cat", {"file_name": src}, parent(src)
            return "write_file", {"file_name": p, "content": content}, parent(p)
        old = norm(w.fs[p]) if w.is_file(p) else ""
        if old and content.startswith(old + "\n"):
            return "write_file", {"file_name": p, "content": content[len(old) + 1:], "append": True}, parent(p)
        if not content and p not in w.fs and "touch" in avail:
            return "touch", {"file_name": p}, parent(p)
        return "write_file", {"file_name": p, "content": content}, parent(p)
    for p, kind, _ in sorted(bad, key=lambda v: (-v[0].count("/"), v[0])):
        if kind == "absent":
            return _remove(w, p)
    for to, needle, mode, text in turn.messages:
        if not message_ok(w.sent, to, needle, mode):
            return "send_message", {"to": to, "text": text}, None
    return None


def render(w: World, fn: str, args: dict, where: str | None) -> tuple[str, dict]:
    """Turn a planned call into what the expert types: cd to ``where`` first, then cwd-relative paths."""
    if where is not None and w.cwd != where:
        return "cd", {"folder": _rel(w.cwd, where)}
    out = dict(args)
    for key in ("file_name", "dir_name", "path", "source"):
        if key in out:
            out[key] = _rel(w.cwd, out[key])
    if "destination" in out:
        src, dst = args["source"], args["destination"]
        same_name = posixpath.basename(src) == posixpath.basename(dst) and parent(src) != parent(dst)
        out["destination"] = _rel(w.cwd, parent(dst) if same_name else dst)  # "into that folder"
    if fn == "find" and w.cwd != HOME:
        out["path"] = "~"
    return fn, out


class ToolsEnv(Env):
    """Multi-turn JSON function calling (BFCL-v3-like) on a simulated file system and messaging service."""

    name = "tools"
    description = ("Multi-turn function calling (BFCL-v3-like): JSON calls to a simulated file system (ls, cd, "
                   "mkdir, write_file, mv, cp, rm, grep, find, wc ...) and a messaging service fulfil a sequence "
                   "of user requests, checked on the resulting state. OOD: missing function, missing parameter "
                   "(ask_user), long context.")
    action_space = "open"
    branching = "snapshot"
    oracle = "state"
    default_max_steps = 40
    _state_attrs = ("scen", "world", "turn")

    def _generate(self, split: str, difficulty: int, index: int, seed: int):
        variant = OOD_VARIANTS[index % len(OOD_VARIANTS)] if split == "ood" else "base"
        scen = generate(seed, difficulty, variant)
        params = {"variant": variant, "turns": len(scen.turns)}
        if scen.missing:
            params["missing_function"] = scen.missing
        return scen.goal, params, ()

    # ----------------------------------------------------------------- episode
    def _reset(self, task: Task) -> str:
        variant = task.param("variant", "base")
        if variant not in VARIANTS:
            raise EnvError(f"tools: task {task.id!r} has unknown variant {variant!r}; expected one of {list(VARIANTS)}")
        self.scen = generate(task.seed, self._difficulty(task.difficulty), variant)
        self.world = self.scen.world()
        self.turn = 0
        funcs = " ".join(signature(f) for f in self.scen.functions)
        return (f"You are in {HOME}. One JSON call per step, e.g. {_EXAMPLE}. Functions: {funcs}\n"
                f"{self._request()}")

    def _request(self) -> str:
        turn = self.scen.turns[self.turn]
        told = f" [User: {turn.answer}]" if turn.answer and f"ask:{self.turn}" in self.world.known else ""
        return f"Request {self.turn + 1}/{len(self.scen.turns)}: {turn.request}{told}"

    def _hint(self) -> str:
        """When the request's own changes are in place but something else it relies on is not."""
        turn = self.scen.turns[self.turn]
        bad = violations(turn, self.world)
        own = set(turn.own)
        if not bad or any(p in own for p, _, _ in bad):
            return ""
        if not all(message_ok(self.world.sent, to, n, m) for to, n, m, _ in turn.messages):
            return ""
        p, kind, _ = bad[0]
        what = "must not exist" if kind == "absent" else "is missing" if p not in self.world.fs else "was changed"
        return f" (Not complete: {p} {what}; restore it.)"

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        n = len(self.scen.turns)
        try:
            name, args = parse_call(action, self.scen.functions)
            result = self._ask(args["question"]) if name == "ask_user" else self.world.call(name, args)
        except (CallError, ToolError) as e:
            kind = e.kind if isinstance(e, CallError) else "execution"
            obs = f"Error: {e}\n[{self.world.cwd}] {self._request()}"
            return obs, 0.0, False, {"valid": False, "error": kind, "score": self.turn / n}
        old = self.turn
        while self.turn < n and satisfied(self.scen.turns[self.turn], self.world):
            self.turn += 1
        score = self.turn / n
        lines = [result]
        if self.turn > old:
            which = f" {old + 1}" if self.turn == old + 1 else f"s {old + 1}-{self.turn}"
            lines.append(f"Request{which} done.")
        if self.turn == n:
            lines.append(f"All {n} requests completed.")
            return "\n".join(lines), (self.turn - old) / n, True, {"valid": True, "score": 1.0, "won": True}
        lines.append(f"[{self.world.cwd}] {self._request()}{self._hint()}")
        return "\n".join(lines), (self.turn - old) / n, False, {"valid": True, "score": score}

    def _ask(self, question: str) -> str:
        if not question.strip():
            raise ToolError("ask_user: the question is empty.")
        self.world.known[f"ask:{self.turn}"] = 1
        answer = self.scen.turns[self.turn].answer
        return f"User: {answer}" if answer else "User: Everything you need is in the request."

    def admissible_actions(self) -> list[str] | None:
        return None

    def oracle_action(self) -> str | None:
        if self.task is None or self.done:
            return None
        planned = plan(self.scen, self.turn, self.world)
        if planned is None:
            return None
        fn, args = render(self.world, *planned)
        return json.dumps({"name": fn, "arguments": args})
