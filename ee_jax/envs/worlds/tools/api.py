"""The simulated services of the ``tools`` environment: a small file system and a messaging service.

``World`` holds the whole mutable state (files, current directory, sent messages, what the agent has
read) in plain dicts and lists so a deep copy is cheap. ``parse_call`` turns an action string (a JSON
function call) into a validated ``(name, arguments)`` pair or raises ``CallError`` with a precise
message; ``World.call`` executes it or raises ``ToolError``. Every check runs before any mutation, so a
failed call leaves the state unchanged.

File contents are lines joined by ``"\\n"`` without a trailing newline; a directory is stored as
``None`` in ``World.fs`` (absolute path → content).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re

HOME = "/home/user"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


class CallError(ValueError):
    """The action is not a well-formed call of an available function (``kind`` says which check failed)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ToolError(ValueError):
    """A well-formed call that failed while executing (missing file, unknown contact ...)."""


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    type: str = "string"  # JSON type: string | boolean
    required: bool = True
    choices: tuple[str, ...] = ()


_P = Param
FUNCTIONS: dict[str, tuple[Param, ...]] = {
    "ls": (_P("path", required=False),),
    "cd": (_P("folder"),),
    "pwd": (),
    "mkdir": (_P("dir_name"),),
    "touch": (_P("file_name"),),
    "cat": (_P("file_name"),),
    "write_file": (_P("file_name"), _P("content"), _P("append", "boolean", False)),
    "mv": (_P("source"), _P("destination")),
    "cp": (_P("source"), _P("destination")),
    "rm": (_P("path"),),
    "grep": (_P("file_name"), _P("pattern")),
    "find": (_P("name"), _P("path", required=False)),
    "wc": (_P("file_name"), _P("mode", required=False, choices=("l", "w", "c"))),
    "send_message": (_P("to"), _P("text")),
    "list_messages": (_P("sender", required=False),),
    "ask_user": (_P("question"),),
}
BASE_FUNCTIONS = tuple(f for f in FUNCTIONS if f != "ask_user")
_EXAMPLE = '{"name": "ls", "arguments": {}}'
_PATH_PARAMS = ("path", "folder", "dir_name", "file_name", "source", "destination", "to", "sender")


def signature(name: str) -> str:
    """Compact signature: ``write_file(file_name, content, append?:bool)``; untyped parameters are strings."""
    parts = []
    for p in FUNCTIONS[name]:
        s = p.name + ("" if p.required else "?")
        if p.choices:
            s += ":" + "|".join(p.choices)
        elif p.type != "string":
            s += ":bool"
        parts.append(s)
    return f"{name}({', '.join(parts)})"


def _json_type(v) -> str:
    if isinstance(v, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "array", dict: "object"}.get(type(v), "null")


def parse_call(action: str, available: tuple[str, ...]) -> tuple[str, dict]:
    """Parse one JSON call ``{"name": ..., "arguments": {...}}`` (a one-element list, a ```json fence and
    ``arguments`` given as a JSON string are accepted too) and check it against ``available``."""
    text = action.strip()
    if text.startswith("```"):
        text = text.strip("`").strip()
        text = text[4:] if text.startswith("json") else text
    if not text:
        raise CallError("parse", f"Empty action. Send one function call as JSON, e.g. {_EXAMPLE}.")
    try:
        call = json.loads(text)
    except json.JSONDecodeError as e:
        raise CallError("parse", f"Malformed JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos}). "
                                 f"Expected one call like {_EXAMPLE}.") from None
    if isinstance(call, list):
        if len(call) != 1:
            raise CallError("parse", f"Send one call per action; got a list of {len(call)} calls.")
        call = call[0]
    if not isinstance(call, dict):
        raise CallError("parse", f"Expected a JSON object like {_EXAMPLE}; got a JSON {_json_type(call)}.")
    extra = sorted(set(call) - {"name", "arguments"})
    if extra:
        raise CallError("parse", f"Unexpected key {extra[0]!r} in the call; use only \"name\" and \"arguments\".")
    name, args = call.get("name"), call.get("arguments")
    if not isinstance(name, str):
        raise CallError("parse", f"The call needs \"name\": a string naming the function, e.g. {_EXAMPLE}.")
    if name not in available:
        raise CallError("unknown_function", f"Unknown function {name!r}. Available: {', '.join(available)}.")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise CallError("parse", f"\"arguments\" is a string that is not valid JSON: {e.msg} "
                                     f"(char {e.pos}).") from None
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise CallError("arguments", f"{name}: \"arguments\" must be a JSON object, got a {_json_type(args)}.")
    params = {p.name: p for p in FUNCTIONS[name]}
    described = ", ".join(f"{p.name} ({p.type}{'' if p.required else ', optional'})" for p in params.values())
    for key in args:
        if key not in params:
            raise CallError("arguments", f"{name}: unexpected argument {key!r}. Parameters: {described or 'none'}.")
    for p in params.values():
        if p.name not in args:
            if p.required:
                raise CallError("arguments", f"{name}: missing required argument {p.name!r} ({p.type}).")
            continue
        v = args[p.name]
        if _json_type(v) != p.type:
            raise CallError("arguments", f"{name}: argument {p.name!r} must be a {p.type}, got "
                                         f"{_json_type(v)} {json.dumps(v)[:40]}.")
        if p.choices and v not in p.choices:
            raise CallError("arguments", f"{name}: argument {p.name!r} must be one of "
                                         f"{', '.join(repr(c) for c in p.choices)}, got {v!r}.")
    return name, {k: (v.strip() if k in _PATH_PARAMS else v) for k, v in args.items()}


def norm(text: str) -> str:
    """Content as compared by the checks: outer whitespace and trailing spaces of lines ignored."""
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def parent(path: str) -> str:
    return posixpath.dirname(path)


def n_lines(content: str) -> int:
    return len(content.split("\n")) if content else 0


class World:
    """The mutable state of one episode and the implementation of every function but ``ask_user``."""

    def __init__(self, fs: dict, inbox: tuple, contacts: tuple, limit: int):
        self.fs: dict[str, str | None] = dict(fs)
        self.cwd = HOME
        self.inbox = inbox  # ((sender, text), ...): read-only
        self.contacts = contacts
        self.sent: list[tuple[str, str]] = []
        self.known: dict[str, int] = {}  # what the agent has looked at ("cat:/p", "msg:carol" ...): the oracle's memory
        self.limit = limit  # characters of one result before it is truncated

    def __deepcopy__(self, memo) -> World:
        """Snapshots: the containers are copied, their str/tuple items are immutable and shared."""
        new = object.__new__(World)
        new.__dict__.update(self.__dict__)
        new.fs, new.sent, new.known = dict(self.fs), list(self.sent), dict(self.known)
        return new

    # ----------------------------------------------------------------- paths
    def resolve(self, p: str) -> str:
        if not p:
            raise ToolError("Empty path.")
        if p == "~" or p.startswith("~/"):
            full = posixpath.normpath(HOME + p[1:])
        else:
            full = posixpath.normpath(posixpath.join(self.cwd, p))
        if full != HOME and not full.startswith(HOME + "/"):
            raise ToolError(f"Permission denied: {p} is outside {HOME}.")
        return full

    def is_dir(self, p: str) -> bool:
        return p in self.fs and self.fs[p] is None

    def is_file(self, p: str) -> bool:
        return self.fs.get(p) is not None

    def children(self, d: str) -> list[str]:
        return sorted(p for p in self.fs if parent(p) == d and p != d)

    def descendants(self, d: str) -> list[str]:
        return sorted(p for p in self.fs if p.startswith(d + "/"))

    def _missing(self, p: str, what: str = "file or directory") -> ToolError:
        if not self.is_dir(parent(p)):
            return ToolError(f"No such directory: {parent(p)}.")
        return ToolError(f"No such {what}: {posixpath.basename(p)} in {parent(p)}.")

    def _existing(self, p: str) -> str:
        full = self.resolve(p)
        if full not in self.fs:
            raise self._missing(full)
        return full

    def _file(self, p: str) -> str:
        full = self.resolve(p)
        if self.is_dir(full):
            raise ToolError(f"Is a directory: {full}.")
        if full not in self.fs:
            raise self._missing(full, "file")
        return full

    def _new(self, p: str, kind: str) -> str:
        """A path where a new entry may be created: valid name, existing parent directory."""
        full = self.resolve(p)
        name = posixpath.basename(full)
        if full == HOME or not _NAME_RE.fullmatch(name) or name in (".", ".."):
            raise ToolError(f"Invalid {kind} name {p!r}: use letters, digits, '.', '_' or '-'.")
        if not self.is_dir(parent(full)):
            raise ToolError(f"No such directory: {parent(full)}.")
        return full

    def _guard(self, full: str, verb: str) -> None:
        if full == HOME or self.cwd == full or self.cwd.startswith(full + "/"):
            raise ToolError(f"Cannot {verb} {full}: it is the current directory or contains it (cd elsewhere first).")

    def _truncate(self, items: list[str], sep: str, note: str) -> str:
        out, used = [], 0
        for i, item in enumerate(items):
            if out and used + len(item) + len(sep) > self.limit:
                return sep.join(out) + f"{sep}... (+{len(items) - i} more not shown; {note})"
            out.append(item)
            used += len(item) + len(sep)
        return sep.join(out)

    # ----------------------------------------------------------------- dispatch
    def call(self, name: str, args: dict) -> str:
        """Execute a validated call; returns the result text or raises ``ToolError`` (state unchanged)."""
        return getattr(self, "_fn_" + name)(**args)

    def _fn_ls(self, path: str = ".") -> str:
        full = self._existing(path or ".")
        if not self.is_dir(full):
            return posixpath.basename(full)
        names = [posixpath.basename(c) + ("/" if self.is_dir(c) else "") for c in self.children(full)]
        self.known["ls:" + full] = 1
        return f"{full}: " + (self._truncate(names, "  ", "use find(name=...) to search") if names else "(empty)")

    def _fn_cd(self, folder: str) -> str:
        full = self.resolve(folder)
        if not self.is_dir(full):
            raise ToolError(f"Not a directory: {full}." if full in self.fs else f"No such directory: {full}.")
        self.cwd = full
        return f"Now in {full}."

    def _fn_pwd(self) -> str:
        return self.cwd

    def _fn_mkdir(self, dir_name: str) -> str:
        full = self._new(dir_name, "directory")
        if full in self.fs:
            raise ToolError(f"Already exists: {posixpath.basename(full)} in {parent(full)}.")
        self.fs[full] = None
        return f"Created directory {full}."

    def _fn_touch(self, file_name: str) -> str:
        full = self._new(file_name, "file")
        if full in self.fs:
            return f"{full} already exists (unchanged)."
        self.fs[full] = ""
        return f"Created empty file {full}."

    def _fn_cat(self, file_name: str) -> str:
        full = self._file(file_name)
        content = self.fs[full]
        self.known["cat:" + full] = 1
        return self._truncate(content.split("\n"), "\n", "use grep or wc") if content else f"({full} is empty)"

    def _fn_write_file(self, file_name: str, content: str, append: bool = False) -> str:
        full = self._new(file_name, "file")
        if self.is_dir(full):
            raise ToolError(f"Is a directory: {full}.")
        old = self.fs.get(full)
        if append and old:
            self.fs[full] = old + "\n" + content
            return f"Appended {len(content)} characters to {full} (now {n_lines(self.fs[full])} lines)."
        self.fs[full] = content
        return f"Wrote {len(content)} characters to {full}" + (" (replaced its content)." if old else ".")

    def _target(self, src: str, destination: str) -> str:
        dst = self.resolve(destination)
        if self.is_dir(dst):
            dst = dst + "/" + posixpath.basename(src)
        if dst == src:
            raise ToolError(f"Source and destination are the same: {src}.")
        if dst.startswith(src + "/"):
            raise ToolError(f"Cannot move {src} into itself.")
        if self.is_dir(dst) or (dst in self.fs and self.is_dir(src)):
            raise ToolError(f"Already exists: {posixpath.basename(dst)} in {parent(dst)}.")
        return self._new(dst, "file")

    def _fn_mv(self, source: str, destination: str) -> str:
        src = self._existing(source)
        self._guard(src, "move")
        dst = self._target(src, destination)
        over = " (replaced the existing file)" if dst in self.fs else ""
        for p in [src] + self.descendants(src):
            self.fs[dst + p[len(src):]] = self.fs.pop(p)
        return f"Moved {src} to {dst}{over}."

    def _fn_cp(self, source: str, destination: str) -> str:
        src = self._existing(source)
        if self.is_dir(src):
            raise ToolError(f"{src} is a directory; cp copies files only.")
        dst = self._target(src, destination)
        over = " (replaced the existing file)" if dst in self.fs else ""
        self.fs[dst] = self.fs[src]
        return f"Copied {src} to {dst}{over}."

    def _fn_rm(self, path: str) -> str:
        full = self._existing(path)
        self._guard(full, "remove")
        inside = self.children(full)
        if inside:
            raise ToolError(f"Directory not empty: {full} has {len(inside)} entries; remove them first.")
        del self.fs[full]
        return f"Removed {full}."

    def _fn_grep(self, file_name: str, pattern: str) -> str:
        full = self._file(file_name)
        if not pattern:
            raise ToolError("grep: the pattern is empty.")
        lines = self.fs[full].split("\n")
        hits = [f"{i}: {line}" for i, line in enumerate(lines, 1) if pattern.lower() in line.lower()]
        self.known["grep:" + full] = 1
        if not hits:
            return f"No line of {full} contains {pattern!r}."
        return self._truncate(hits, "\n", "use a more specific pattern")

    def _fn_find(self, name: str, path: str = ".") -> str:
        base = self._existing(path or ".")
        if not name:
            raise ToolError("find: the name is empty.")
        hits = [p for p in self.descendants(base) if name.lower() in posixpath.basename(p).lower()]
        self.known["find:" + name.lower()] = 1
        if not hits:
            return f"No file or directory under {base} has {name!r} in its name."
        return self._truncate(hits, "\n", "use a more specific name")

    def _fn_wc(self, file_name: str, mode: str = "l") -> str:
        full = self._file(file_name)
        content = self.fs[full]
        if mode == "l":
            self.known["wc:" + full] = 1
            return f"{n_lines(content)} lines in {full}."
        if mode == "w":
            return f"{len(content.split())} words in {full}."
        return f"{len(content)} characters in {full}."

    def _fn_send_message(self, to: str, text: str) -> str:
        if to.lower() not in self.contacts:
            raise ToolError(f"Unknown contact {to!r}. Contacts: {', '.join(self.contacts)}.")
        if not text.strip():
            raise ToolError("send_message: the text is empty.")
        self.sent.append((to.lower(), text))
        return f"Message sent to {to.lower()}."

    def _fn_list_messages(self, sender: str | None = None) -> str:
        shown = [(i, s, t) for i, (s, t) in enumerate(self.inbox, 1) if sender is None or s == sender.lower()]
        if not shown:
            return f"No messages from {sender}." if sender else "Your inbox is empty."
        out = self._truncate([f"[{i}] from {s}: {t}" for i, s, t in shown], "\n", "filter with sender=...")
        for _, s, t in shown:
            if f"from {s}: {t}" in out:
                self.known["msg:" + s] = 1
        head = f"Inbox, messages from {sender.lower()}:" if sender else f"Inbox ({len(self.inbox)} messages):"
        return head + "\n" + out
