"""Procedural scenarios of the ``tools`` environment: an initial file system and inbox, then a sequence of
user requests (turns), each with the state it must produce.

A scenario is built by playing the requests on a ground-truth ``World``. The target of turn ``i`` is
the ground-truth state after turns ``0..i`` over every path that existed at the start or that any turn
touched (so the agent's extra files are harmless, but deleting or changing a file the task did not ask
to change is not), plus every message the turns required. Variants: ``base`` (train/valid/test) and the
three held-out BFCL variants ``missing_function``, ``missing_parameter`` and ``long_context``.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
import random
import re

from ee_jax.envs.worlds.tools.api import BASE_FUNCTIONS, HOME, World, n_lines, norm, parent

VARIANTS = ("base", "missing_function", "missing_parameter", "long_context")
OOD_VARIANTS = VARIANTS[1:]
MISSING = {"cp": ("copy",), "mv": ("move", "rename"), "wc": ("count",), "grep": ("grep_send",),
           "touch": ("create_empty",)}
HIDEABLE = ("mkdir", "create_file", "move", "rename", "copy", "count", "grep_send", "forward")
KINDS = {1: ("mkdir", "create_file", "create_empty", "move", "rename", "copy", "delete", "append"),
         2: ("count", "grep_send", "forward"), 3: ("save_message", "find_move", "compound")}
TURNS = {1: 2, 2: 3, 3: 4}
RESULT_LIMIT = {"base": 400, "long_context": 1200}

TOP_DIRS = ["docs", "projects", "photos", "music", "archive", "backup", "notes", "work", "personal", "shared",
            "invoices", "travel", "recipes", "school"]
SUB_DIRS = ["alpha", "beta", "old", "2023", "drafts", "clients", "misc", "summer"]
NEW_DIRS = ["reports", "final", "review", "exports", "q3", "keep", "later", "signed", "scans", "ideas", "sorted"]
STEMS = ["budget", "report", "notes", "todo", "summary", "invoice", "agenda", "draft", "readme", "plan", "letter",
         "schedule", "minutes", "checklist", "results", "expenses", "contacts", "recipe", "itinerary", "server"]
EXTS = ["txt", "md", "csv", "log"]
CONTACTS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
            "oscar", "peggy", "rupert", "sybil", "trent"]
TEXT = ["Call the plumber on Monday", "Budget approved for the spring campaign", "Ask Maria about the venue",
        "Renew the parking permit", "Buy printer paper and toner", "Flight lands at 18:40",
        "Send the slides before the review", "Water the plants twice a week", "Book a table for six people",
        "Update the project timeline", "Pick up the dry cleaning", "Confirm the hotel in Lisbon",
        "Draft the quarterly newsletter", "Pay the electricity invoice", "Schedule the dentist appointment",
        "Collect feedback from the pilot users", "Archive the old contracts", "Prepare the onboarding checklist",
        "Check the warranty of the laptop", "Order new chairs for the office", "Review the insurance policy",
        "Plan the team offsite in June", "Return the library books", "Fix the broken link on the homepage"]
LOG = ["service started", "user login accepted", "cache refreshed", "disk usage at 81 percent",
       "timeout contacting database", "backup finished", "certificate expires soon", "request queue drained",
       "memory pressure detected", "configuration reloaded", "payment gateway unreachable", "index rebuilt"]
ITEMS = ["coffee", "train", "hotel", "paper", "taxi", "lunch", "software", "cables", "postage", "books"]
INBOX = ["The meeting moved to Thursday at 3pm", "Please review my pull request today",
         "Lunch at the Italian place tomorrow?", "The client signed the contract", "Server maintenance tonight",
         "Can you send me the budget figures?", "Happy birthday to the team lead!", "The printer on floor 2 is fixed",
         "Remember to submit your timesheet", "New office hours start next week", "The train tickets are booked",
         "Quarterly results look strong", "Parking lot closed on Saturday", "Welcome our new designer Priya",
         "The demo went really well", "Please water my plants while I am away"]
RARE = ["checksum mismatch in shard 7", "license renewal rejected", "firmware upgrade postponed",
        "unexpected reboot of node gamma", "quota exceeded for tenant orion"]
NEW_LINES = ["Follow up with the supplier", "Move the deadline to Friday", "Share the notes with the team",
             "Double-check the totals", "Add the photos from the trip", "Call back the landlord"]


class Frozen:
    """Immutable by convention: deep copies (snapshots) share the object instead of copying it."""

    def __deepcopy__(self, memo):
        return self


@dataclasses.dataclass(frozen=True)
class Need(Frozen):
    """Information the expert gathers before acting: satisfied once any of ``keys`` is in ``World.known``;
    ``calls`` are the ways to get it, preferred first; ``src`` must exist as a file for the call to work."""

    keys: tuple[str, ...]
    calls: tuple[tuple[str, tuple], ...]
    src: str | None = None


@dataclasses.dataclass(frozen=True)
class Turn(Frozen):
    """One user request. ``target``: (path, "dir" | "file" | "absent", normalised content) for every
    path checked after this request; ``messages``: (to, needle, mode, text) that must have been sent
    (mode "number": ``needle`` as a whole number, "text": contained after normalisation), including the
    earlier requests'; ``own``: the paths this request itself changes."""

    kind: str
    request: str
    needs: tuple[Need, ...]
    target: tuple[tuple[str, str, str], ...]
    messages: tuple[tuple[str, str, str, str], ...]
    own: tuple[str, ...]
    answer: str | None = None  # ask_user's reply (missing_parameter)


@dataclasses.dataclass(frozen=True)
class Scenario(Frozen):
    variant: str
    fs: tuple[tuple[str, str | None], ...]
    inbox: tuple[tuple[str, str], ...]
    contacts: tuple[str, ...]
    functions: tuple[str, ...]
    turns: tuple[Turn, ...]
    limit: int
    missing: str | None = None

    def world(self) -> World:
        return World(dict(self.fs), self.inbox, self.contacts, self.limit)

    @property
    def goal(self) -> str:
        reqs = " ".join(f"({i + 1}) {t.request}" for i, t in enumerate(self.turns))
        return f"Complete {len(self.turns)} requests in order with the file-system and messaging API: {reqs}"


def _clean(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s:%-]", " ", text.lower()).split())


def message_ok(sent: list, to: str, needle: str, mode: str) -> bool:
    for who, text in sent:
        if who != to:
            continue
        if mode == "number" and re.search(rf"(?<![\w.]){re.escape(needle)}(?![\w]|\.\d)", text):
            return True
        if mode == "text" and _clean(needle) in _clean(text):
            return True
    return False


def violations(turn: Turn, w: World) -> list[tuple[str, str, str]]:
    """Target entries the state does not meet, in the order they appear (sorted by path)."""
    bad = []
    for path, kind, content in turn.target:
        if kind == "absent":
            ok = path not in w.fs
        elif kind == "dir":
            ok = w.is_dir(path)
        else:
            ok = w.is_file(path) and norm(w.fs[path]) == content
        if not ok:
            bad.append((path, kind, content))
    return bad


def satisfied(turn: Turn, w: World) -> bool:
    return not violations(turn, w) and all(message_ok(w.sent, to, n, m) for to, n, m, _ in turn.messages)


def disp(d: str) -> str:
    return "your home folder" if d == HOME else d[len(HOME) + 1:]


# --------------------------------------------------------------------------- file system generation
def _content(rng: random.Random, ext: str, long: bool = False) -> str:
    if ext == "csv":
        rows = [f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},{rng.choice(ITEMS)},{rng.randint(5, 900)}"
                for _ in range(rng.randint(2, 4))]
        return "\n".join(["date,item,amount"] + rows)
    if ext == "log":
        k = rng.randint(40, 70) if long else rng.randint(3, 6)
        msgs = [rng.choice(LOG) for _ in range(k - long)] + ([rng.choice(RARE)] if long else [])
        lines = sorted(f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} "
                       f"{rng.choice(['INFO', 'INFO', 'WARN', 'ERROR'])} {m}" for m in msgs)
        return "\n".join(lines)
    return "\n".join(rng.sample(TEXT, rng.randint(1, 4)))


def _fill(rng: random.Random, fs: dict, d: str, k: int) -> None:
    names: list[str] = []
    while len(names) < k:
        name = f"{rng.choice(STEMS)}.{rng.choice(EXTS)}"
        if name not in names and d + "/" + name not in fs:
            names.append(name)
    for name in names:
        fs[d + "/" + name] = _content(rng, name.rsplit(".", 1)[1])


def _make_fs(rng: random.Random, difficulty: int, variant: str) -> dict:
    n_top, n_sub = {1: (3, 0), 2: (4, 1), 3: (5, 2)}[difficulty]
    fs: dict[str, str | None] = {HOME: None}
    tops = [HOME + "/" + d for d in rng.sample(TOP_DIRS, n_top)]
    subs = []
    for _ in range(n_sub):
        sub = rng.choice(tops) + "/" + rng.choice(SUB_DIRS)
        if sub not in subs:
            subs.append(sub)
    for d in tops + subs:
        fs[d] = None
    _fill(rng, fs, HOME, rng.randint(0, 1 + (difficulty == 3)))
    for d in tops + subs:
        _fill(rng, fs, d, rng.randint(2, 3 if difficulty < 3 else 4) - (d in subs))
    if variant == "long_context":
        big = HOME + "/" + rng.choice([d for d in TOP_DIRS if HOME + "/" + d not in fs])
        fs[big] = None
        names = sorted({f"{rng.choice(STEMS)}_{rng.randint(0, 999):03d}.{rng.choice(EXTS + ['pdf', 'jpg'])}"
                        for _ in range(rng.randint(60, 90))})
        for k, name in enumerate(names):
            fs[big + "/" + name] = f"{rng.choice(TEXT)} (item {k + 1})"
        fs[rng.choice(tops) + "/server_events.log"] = _content(rng, "log", long=True)
    return fs


# --------------------------------------------------------------------------- requests
class _Gen:
    """Draws requests on the ground-truth world ``w``; each kind returns None when it does not fit."""

    def __init__(self, rng: random.Random, w: World, variant: str):
        self.rng, self.w, self.variant = rng, w, variant
        self.recent: list[str] = []  # paths the previous requests created: later ones like to reuse them
        self.big = None
        if variant == "long_context":
            sizes = {d: len(w.children(d)) for d in self.dirs()}
            self.big = max(sizes, key=lambda d: (sizes[d], d))

    def dirs(self) -> list[str]:
        return sorted(p for p, v in self.w.fs.items() if v is None)

    def files(self, where: str | None = None) -> list[str]:
        return sorted(p for p, v in self.w.fs.items() if v is not None and (where is None or parent(p) == where))

    def pick_file(self, ok=lambda p: True, where: str | None = None) -> str | None:
        cands = [p for p in self.files(where) if ok(p)]
        fresh = [p for p in self.recent if p in cands]
        if fresh and self.rng.random() < 0.5:
            return fresh[-1]
        if self.big and self.rng.random() < 0.5 and [p for p in cands if parent(p) == self.big]:
            cands = [p for p in cands if parent(p) == self.big]
        return self.rng.choice(cands) if cands else None

    def pick_dir(self, avoid: str = "", free: str = "") -> str | None:
        cands = [d for d in self.dirs() if (not free or d + "/" + free not in self.w.fs) and d != self.big
                 and not (avoid and (d == avoid or d.startswith(avoid + "/")))]
        fresh = [d for d in self.recent if d in cands]
        if fresh and self.rng.random() < 0.6:
            return fresh[-1]
        return self.rng.choice(cands) if cands else None

    def new_name(self, d: str, pool: list[str], ext: str = "") -> str:
        for _ in range(50):
            name = self.rng.choice(pool) + ext
            if d + "/" + name not in self.w.fs:
                return name
        return f"item{len(self.w.fs)}{ext}"

    def contact(self, avoid: str = "") -> str:
        return self.rng.choice([c for c in self.w.contacts if c != avoid])

    # Each kind returns (request, vague request, question, answer, ops, needs, messages).
    def k_mkdir(self):
        d = self.pick_dir()
        name = self.new_name(d, NEW_DIRS)
        return (f"Create a folder named '{name}' inside {disp(d)}.", f"Create a new folder inside {disp(d)}.",
                "What should the new folder be called?", f"Call it '{name}'.", [("mkdir", d + "/" + name)], [], [])

    def k_create_file(self):
        d = self.pick_dir()
        name = self.new_name(d, STEMS, self.rng.choice([".txt", ".md"]))
        line = self.rng.choice(NEW_LINES)
        return (f"Create a file '{name}' in {disp(d)} containing: {line}",
                f"Create a new file in {disp(d)} containing: {line}", "What should the file be called?",
                f"Name it '{name}'.", [("write", d + "/" + name, line)], [], [])

    def k_create_empty(self):
        d = self.pick_dir()
        name = self.new_name(d, STEMS, self.rng.choice([".txt", ".md", ".log"]))
        return f"Create an empty file '{name}' in {disp(d)}.", None, None, None, [("write", d + "/" + name, "")], [], []

    def k_move(self):
        f = self.pick_file()
        b = f and self.pick_dir(avoid=parent(f), free=posixpath.basename(f))
        if not b:
            return None
        name, a = posixpath.basename(f), disp(parent(f))
        return (f"Move {name} from {a} into {disp(b)}.", f"Move {name} from {a} into the folder where it belongs.",
                f"Which folder should {name} go to?", f"Put it in {disp(b)}.", [("mv", f, b + "/" + name)], [], [])

    def k_rename(self):
        f = self.pick_file()
        ext = posixpath.splitext(f)[1]
        new = self.new_name(parent(f), STEMS, ext)
        name, a = posixpath.basename(f), disp(parent(f))
        return (f"Rename {name} in {a} to {new}.", f"Give {name} in {a} a clearer name.",
                "What should the new name be?", f"Rename it to '{new}'.", [("mv", f, parent(f) + "/" + new)], [], [])

    def k_copy(self):
        f = self.pick_file()
        name, a = posixpath.basename(f), disp(parent(f))
        b = self.pick_dir(avoid=parent(f), free=name)
        if b and self.rng.random() < 0.7:
            return (f"Copy {name} from {a} into {disp(b)}.", f"Put a backup copy of {name} from {a} in another folder.",
                    "Which folder should the copy go to?", f"Copy it into {disp(b)}.",
                    [("cp", f, b + "/" + name)], [], [])
        stem, ext = posixpath.splitext(name)
        new = f"{stem}_copy{ext}"
        if parent(f) + "/" + new in self.w.fs:
            return None
        return (f"Make a copy of {name} in {a} named {new}.", f"Make a copy of {name} in {a} under a new name.",
                "What should the copy be named?", f"Name it '{new}'.", [("cp", f, parent(f) + "/" + new)], [], [])

    def k_delete(self):
        f = self.pick_file()
        return f"Delete {posixpath.basename(f)} from {disp(parent(f))}.", None, None, None, [("rm", f)], [], []

    def k_append(self):
        f = self.pick_file(lambda p: p.endswith((".txt", ".md")) and bool(self.w.fs[p]))
        if not f:
            return None
        line = self.rng.choice(NEW_LINES)
        return (f"Append the line '{line}' to {posixpath.basename(f)} in {disp(parent(f))}.", None, None, None,
                [("write", f, self.w.fs[f] + "\n" + line)], [], [])

    def _send(self, what: str, needle: str, mode: str, text: str, need: Need, exclude: str = ""):
        c = self.contact(exclude)
        return (f"{what} to {c}.", f"{what} to the colleague who asked for it.", "Who should I send it to?",
                f"Send it to {c}.", [("send", c, text)], [need], [(c, needle, mode, text)])

    def k_count(self):
        long = [p for p in self.files() if p.endswith("server_events.log")]
        f = long[0] if long and self.rng.random() < 0.7 else self.pick_file(lambda p: n_lines(self.w.fs[p]) >= 3)
        if not f:
            return None
        n, name, a = n_lines(self.w.fs[f]), posixpath.basename(f), disp(parent(f))
        need = Need(("wc:" + f, "cat:" + f), (("wc", (("file_name", f),)), ("cat", (("file_name", f),))), f)
        return self._send(f"How many lines does {name} in {a} have? Send the number", str(n), "number",
                          f"{name} has {n} lines.", need)

    def k_grep_send(self):
        long = [p for p in self.files() if p.endswith("server_events.log")]
        f = long[0] if long and self.rng.random() < 0.7 else self.pick_file(lambda p: n_lines(self.w.fs[p]) >= 2)
        if not f:
            return None
        lines = self.w.fs[f].split("\n")
        order = list(range(len(lines)))
        self.rng.shuffle(order)
        for i in order:
            words = [x for x in re.findall(r"[A-Za-z]{5,}", lines[i])
                     if sum(x.lower() in other.lower() for other in lines) == 1]
            if words:
                word = self.rng.choice(words)
                need = Need(("grep:" + f, "cat:" + f),
                            (("grep", (("file_name", f), ("pattern", word))), ("cat", (("file_name", f),))), f)
                return self._send(f"Find the line of {posixpath.basename(f)} in {disp(parent(f))} that mentions "
                                  f"'{word}' and send that line", lines[i], "text", lines[i], need)
        return None

    def _msg_need(self, sender: str) -> Need:
        probe = World({}, self.w.inbox, self.w.contacts, self.w.limit)
        probe.call("list_messages", {})  # filter by sender only when the whole inbox would be truncated
        args = () if "msg:" + sender in probe.known else (("sender", sender),)
        return Need(("msg:" + sender,), (("list_messages", args),))

    def k_forward(self):
        sender, text = self.rng.choice(self.w.inbox)
        return self._send(f"Check your messages and forward the text of {sender}'s message", text, "text", text,
                          self._msg_need(sender), exclude=sender)

    def k_save_message(self):
        sender, text = self.rng.choice(self.w.inbox)
        d = self.pick_dir()
        name = self.new_name(d, [f"from_{sender}", f"{sender}_message", f"{sender}_note"], ".txt")
        return (f"Save the text of {sender}'s message into a new file '{name}' in {disp(d)}.", None, None, None,
                [("write", d + "/" + name, text)], [self._msg_need(sender)], [])

    def k_find_move(self):
        names = [posixpath.basename(p) for p in self.files()]
        f = self.pick_file(lambda p: p.count("/") >= 5 and names.count(posixpath.basename(p)) == 1)
        name = f and posixpath.basename(f)
        b = f and self.pick_dir(avoid=parent(f), free=name)
        if not b:
            return None
        need = Need(("find:" + name.lower(),), (("find", (("name", name),)),))
        return (f"A file named {name} is somewhere in your home folder. Move it into {disp(b)}.", None, None, None,
                [("mv", f, b + "/" + name)], [need], [])

    def k_compound(self):
        groups = {}
        for d in self.dirs():
            for f in self.files(d) if d != self.big else ():
                groups.setdefault((d, posixpath.splitext(f)[1]), []).append(f)
        cands = sorted(k for k, v in groups.items() if len(v) >= 2)
        if not cands:
            return None
        d, ext = self.rng.choice(cands)
        new = d + "/" + self.new_name(d, NEW_DIRS)
        ops = [("mkdir", new)] + [("mv", f, new + "/" + posixpath.basename(f)) for f in groups[(d, ext)]]
        return (f"Create a folder '{posixpath.basename(new)}' in {disp(d)} and move all {ext} files of {disp(d)} "
                f"into it.", None, None, None, ops, [], [])

    def apply(self, ops: list) -> list[str]:
        """Play the ground-truth operations; returns the paths they touched."""
        touched = []
        for op in ops:
            if op[0] == "mkdir":
                self.w.fs[op[1]] = None
                touched.append(op[1])
            elif op[0] == "write":
                self.w.fs[op[1]] = op[2]
                touched.append(op[1])
            elif op[0] in ("mv", "cp"):
                self.w.fs[op[2]] = self.w.fs.pop(op[1]) if op[0] == "mv" else self.w.fs[op[1]]
                touched += [op[1], op[2]]
            elif op[0] == "rm":
                del self.w.fs[op[1]]
                touched.append(op[1])
            elif op[0] == "send":
                self.w.sent.append((op[1], op[2]))
        return touched


def _kind_plan(rng: random.Random, difficulty: int, variant: str) -> tuple[list[list[str]], str | None, int]:
    """Per turn, the kinds to try in order; the missing function; the turn whose parameter is hidden."""
    n = TURNS[difficulty]
    pool = [k for d in range(1, difficulty + 1) for k in KINDS[d]]
    plan = [rng.sample(pool, len(pool)) for _ in range(n)]
    missing, hidden = None, -1
    if difficulty > 1 and variant == "base":  # the harder kinds of this level appear at least once
        plan[rng.randrange(n)][:0] = rng.sample(KINDS[difficulty], len(KINDS[difficulty]))
    if variant == "missing_function":
        missing = rng.choice(sorted(MISSING))
        plan[rng.randrange(n)][:0] = list(MISSING[missing])
    elif variant == "missing_parameter":
        hidden = rng.randrange(n)
        plan[hidden] = rng.sample(HIDEABLE, len(HIDEABLE))
    elif variant == "long_context":
        plan[0][:0] = rng.sample(["move", "copy", "delete", "rename"], 4)
        plan[-1][:0] = rng.sample(["count", "grep_send"], 2)
    return plan, missing, hidden


@functools.lru_cache(maxsize=512)
def generate(seed: int, difficulty: int, variant: str) -> Scenario:
    """The scenario of a task: the same for the same arguments on every machine."""
    rng = random.Random(seed)
    fs = _make_fs(rng, difficulty, variant)
    long = variant == "long_context"
    contacts = tuple(sorted(rng.sample(CONTACTS, 16 if long else 8)))
    senders = rng.sample(contacts, rng.randint(12, 15) if long else rng.randint(2, 4))
    inbox = tuple(zip(senders, rng.sample(INBOX, len(senders))))
    w = World(fs, inbox, contacts, RESULT_LIMIT["long_context" if long else "base"])
    gen = _Gen(rng, w, variant)
    plan, missing, hidden = _kind_plan(rng, difficulty, variant)
    functions = tuple(f for f in BASE_FUNCTIONS if f != missing) + (("ask_user",) if hidden >= 0 else ())
    initial = dict(w.fs)
    touched: list[str] = []
    messages: list[tuple] = []
    turns = []
    for i, kinds in enumerate(plan):
        for kind in kinds:
            before = (dict(w.fs), list(w.sent), list(gen.recent))
            drawn = getattr(gen, "k_" + kind)()
            if drawn is None:
                continue
            request, vague, question, answer, ops, needs, msgs = drawn
            own = gen.apply(ops)
            paths = sorted(set(initial) | set(touched) | set(own))
            target = tuple((p, "absent", "") if p not in w.fs else (p, "dir", "") if w.fs[p] is None
                           else (p, "file", norm(w.fs[p])) for p in paths)
            needs = list(needs)
            big = [op[1] for op in ops if op[0] in ("mv", "cp", "rm") and parent(op[1]) == gen.big]
            if big:  # long context: the expert looks at the crowded folder first
                needs.insert(0, Need(("ls:" + gen.big, "find:" + posixpath.basename(big[0]).lower()),
                                     (("ls", (("path", gen.big),)),)))
            if i == hidden:
                request = vague
                needs.insert(0, Need((f"ask:{i}",), (("ask_user", (("question", question),)),)))
            turn = Turn(kind, request, tuple(needs), target, tuple(messages + msgs), tuple(sorted(set(own))),
                        answer if i == hidden else None)
            prev = World(before[0], inbox, contacts, w.limit)
            prev.sent = before[1]
            if satisfied(turn, prev):  # a request must change something (e.g. not resend the same message)
                w.fs, w.sent, gen.recent = before
                continue
            touched += own
            messages += msgs
            gen.recent += [p for p in own if p in w.fs]
            turns.append(turn)
            break
        else:
            raise RuntimeError(f"tools: no request fits turn {i} (seed {seed}, difficulty {difficulty})")
    return Scenario(variant, tuple(initial.items()), inbox, contacts, functions, tuple(turns), w.limit, missing)
