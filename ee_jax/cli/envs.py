"""``ee-jax envs list | show | play | check``: look at, play and test environments."""

from __future__ import annotations

import argparse
import contextlib
import textwrap

from ee_jax.cli.common import emit, non_negative_int, positive_int
from ee_jax.envs.base import SPLITS, EnvError
from ee_jax.envs.branching import check_determinism, reach
from ee_jax.envs.checks import check_env, run_oracle
from ee_jax.envs.registry import ADAPTERS, env_class, list_envs, make_env


def _options(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise EnvError(f"environment option {p!r}: expected KEY=VALUE, e.g. -o games=[coin]")
        try:
            out[key] = yaml.safe_load(value)  # safe_load: data only, never code
        except yaml.YAMLError as e:
            reason = str(e).strip().splitlines()[0]
            raise EnvError(f"environment option {p!r}: the value is not plain YAML data ({reason})") from None
    return out


def _make(args):
    return make_env(args.env, max_steps=args.max_steps, **_options(args.option))


def cmd_list(args) -> None:
    import importlib.util

    rows = []
    for name in list_envs():
        installed = name not in ADAPTERS or importlib.util.find_spec(ADAPTERS[name]) is not None
        row = {"name": name, "installed": installed}
        if installed:
            row.update(env_class(name).describe())
        rows.append(row)
    lines = [f"{'name':<13} {'actions':<7} {'branching':<9} {'oracle':<6} {'difficulty':<10} description"]
    for r in rows:
        if not r["installed"]:
            lines.append(f"{r['name']:<13} (not installed: pip install -e '.[envs]')")
            continue
        lines.append(f"{r['name']:<13} {r['action_space']:<7} {r['branching']:<9} {r['oracle']:<6} "
                     f"{','.join(map(str, r['difficulties'])):<10} {r['description']}")
    emit(args, "\n".join(lines), {"envs": rows})


def _wrap(text: str, indent: str = "  ") -> str:
    return "\n".join(textwrap.fill(par, 100, initial_indent=indent, subsequent_indent=indent) if par else ""
                     for par in text.split("\n"))


def cmd_show(args) -> None:
    with _make(args) as env:
        task = env.get_task(args.task)
        obs = env.reset(task)
        admissible = env.admissible_actions()
        lines = [f"task        {task.env}/{task.id}  split={task.split} seed={task.seed} "
                 f"difficulty={task.difficulty}", "goal", _wrap(task.goal), "first observation", _wrap(obs)]
        if admissible is not None:
            lines += [f"admissible  ({len(admissible)})", _wrap("; ".join(admissible))]
        payload = {"task": task.to_json(), "observation": obs, "admissible_actions": admissible}
        if args.solve:
            ep = run_oracle(env, task)
            lines.append(f"oracle      {'won' if ep.won else 'did not win'} in {len(ep.actions)} steps "
                         f"(score {ep.score:.2f})")
            for i, (a, o) in enumerate(zip(ep.actions, ep.observations[1:]), 1):
                lines += [f"  {i:>2}. > {a}", _wrap(o, "      ")]
            payload["oracle"] = {"won": ep.won, "score": ep.score, "actions": ep.actions,
                                 "observations": ep.observations}
    emit(args, "\n".join(lines), payload)


def _columns(items: list[str]) -> str:
    """Lay items out in as many aligned columns as the terminal is wide."""
    import shutil

    width = max(map(len, items)) + 3
    ncols = max(1, min(4, (shutil.get_terminal_size((100, 24)).columns - 2) // width))
    nrows = -(-len(items) // ncols)
    rows = []
    for r in range(nrows):
        cells = [items[c * nrows + r] for c in range(ncols) if c * nrows + r < len(items)]
        rows.append("  " + "".join(x.ljust(width) for x in cells).rstrip())
    return "\n".join(rows)


PLAY_HELP = """Type an action (or its number from the list). Commands:
  :actions  list the admissible actions again     :hint   the expert's next action
  :undo     take back the last action             :goal   show the goal again
  :restart  start the task over                   :quit   stop"""
PLAY_COMMANDS = "commands: :actions :hint :undo :goal :restart :quit :help"


def cmd_play(args) -> None:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (arrow keys and history in input())
    with _make(args) as env:
        task = env.get_task(args.task) if args.task else env.make_tasks(
            args.split, 1, start=args.index, difficulty=args.difficulty)[0]
        print(f"== {task.env} {task.id} (split {task.split}, difficulty {task.difficulty}) ==")
        print(_wrap("Goal: " + task.goal, ""))
        print(PLAY_HELP)
        obs, actions, info = env.reset(task), [], {}

        def show(observation):
            print("\n" + _wrap(observation, ""))
            admissible = env.admissible_actions()
            if admissible is not None and not env.done:
                print("\nactions:\n" + _columns([f"[{i}] {a}" for i, a in enumerate(admissible, 1)]))
            return admissible

        admissible = show(obs)
        while not env.done:
            try:
                line = input("> ").strip()
            except EOFError:
                break
            if not line:
                continue
            if line in (":q", ":quit", "quit", "exit"):
                break
            if line in (":h", ":help", "help"):
                print(PLAY_HELP)
            elif line == ":goal":
                print(_wrap(task.goal, ""))
            elif line == ":actions":
                admissible = show(obs)
            elif line == ":hint":
                print(f"hint: {env.oracle_action() or '(no expert action from here)'}")
            elif line in (":undo", ":restart"):
                actions = actions[:-1] if line == ":undo" else []
                obs = reach(env, task, actions)[-1]  # replay works for every environment
                admissible = show(obs)
            elif line.startswith(":"):  # never sent to the environment: a typo must not cost a step
                print(f"unknown command {line!r}; " + PLAY_COMMANDS)
            elif line.isdigit() and admissible is not None and not 1 <= int(line) <= len(admissible):
                print(f"no action [{line}]: choose 1..{len(admissible)}, or type an action")
            else:
                if line.isdigit() and admissible:
                    line = admissible[int(line) - 1]
                obs, _, _, info = env.step(line)
                actions.append(line)
                if not info["valid"]:
                    print("(invalid action)")
                admissible = show(obs)
                if not env.done:
                    print(f"step {env.steps}" + (f"/{env.max_steps}" if env.max_steps else "")
                          + f"  score {env.score:.2f}")
        won = bool(info.get("won"))
        print(f"\n{'You won' if won else 'Episode over' if env.done else 'Stopped'} after {env.steps} "
              f"step{'s' if env.steps != 1 else ''} "
              f"(score {env.score:.2f}).")
    emit(args, "", {"task": task.id, "won": won, "steps": env.steps, "score": env.score, "actions": actions})


def cmd_check(args) -> None:
    with _make(args) as env:
        report = check_env(env, args.split, args.n, difficulty=args.difficulty, start=args.start,
                           progress=not args.no_progress)
        task = env.make_tasks(args.split, 1, start=args.start, difficulty=args.difficulty)[0]
        report["observation_hash"] = check_determinism(env, task, run_oracle(env, task).actions)
        report["deterministic"] = True
    lines = [f"{report['env']} {report['split']}: {report['n']} tasks at difficulty {report['difficulty']}",
             f"oracle success    {report['oracle_success']:.1%}"
             + (f"  (failed: {', '.join(report['failed_tasks'])})" if report["failed_tasks"] else ""),
             f"steps             mean {report['mean_steps']:.1f}, max {report['max_steps']}",
             f"observation chars mean {report['mean_obs_chars']:.0f}, max {report['max_obs_chars']}",
             f"admissible        mean {report['mean_admissible']:.1f}" if report["mean_admissible"] is not None
             else "admissible        open action space",
             f"speed             {report['steps_per_s']:.0f} steps/s (task generation {report['task_gen_s']:.2f} s)",
             f"deterministic     yes (observation hash {report['observation_hash']})"]
    emit(args, "\n".join(lines), report)


def add_parser(sub) -> None:
    envs = sub.add_parser("envs", help="list, show, play and check environments")
    es = envs.add_subparsers(dest="envs_command", required=True)

    def common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
        p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                       help="environment option (YAML value), e.g. -o games=[coin]; repeatable")
        p.add_argument("--max-steps", type=positive_int, default=None, help="step limit (default: the environment's)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    ls = es.add_parser("list", help="registered environments")
    ls.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ls.set_defaults(func=cmd_list)

    sh = es.add_parser("show", help="a task: goal, first observation, admissible actions (--solve: oracle)")
    sh.add_argument("env")
    sh.add_argument("task", help="task id, e.g. train-d1-0")
    sh.add_argument("--solve", action="store_true", help="also play the oracle and print the transcript")
    common(sh)
    sh.set_defaults(func=cmd_show)

    pl = es.add_parser("play", help="play a task in the terminal")
    pl.add_argument("env")
    pl.add_argument("--task", default=None, help="task id (default: task --index of --split)")
    pl.add_argument("--split", default="train", choices=SPLITS)
    pl.add_argument("--index", type=non_negative_int, default=0)
    pl.add_argument("--difficulty", type=positive_int, default=None)
    common(pl)
    pl.set_defaults(func=cmd_play)

    ck = es.add_parser("check", help="oracle success rate, steps, observation lengths, speed, determinism")
    ck.add_argument("env")
    ck.add_argument("--split", default="train", choices=SPLITS)
    ck.add_argument("--n", type=positive_int, default=20)
    ck.add_argument("--start", type=non_negative_int, default=0)
    ck.add_argument("--difficulty", type=positive_int, default=None)
    ck.add_argument("--no-progress", action="store_true", help="no progress bar")
    common(ck)
    ck.set_defaults(func=cmd_check)
