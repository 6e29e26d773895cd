"""Malformed inputs, table-driven, as a user types them: configs, overrides, CLI flags, JSONL demonstrations,
data shards, sidecars, manifests and checkpoints. Every case exits 2 with one ``ee-jax: error:`` line that
names the file or key, and leaves the run directory's existing files byte-identical (a refused command may
only append its attempt to ``invocations.jsonl``).

Commands run in-process (``ee_jax.cli.main.main``): one JAX start-up for the whole table."""

import hashlib
import os
import shutil

import pytest

from ee_jax.cli.main import main
from tests.conftest import TINY

BASE = ["experience.tasks.train=4", "experience.tasks.valid=1", "experience.explore.k=2", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with expert data and explored transitions (collected once), and a stage checkpoint."""
    from tests.test_eval import _save_stage
    from tests.test_serve import make_run

    root = tmp_path_factory.mktemp("malformed")
    run_dir = str(root / "run")
    make_run(run_dir)  # a tokenizer and a tiny model's config
    for stage in ("expert", "explore"):
        assert main(["collect", stage, *BASE, *TINY, f"run_dir={run_dir}"]) == 0
    _save_stage(run_dir, "il", seed=3)
    return root, run_dir


def _digest(run_dir: str) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(run_dir):
        for f in files:
            path = os.path.join(d, f)
            if f != "invocations.jsonl":
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, run_dir)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _damage(path: str, data: bytes):
    """A setup that overwrites ``path`` and a teardown that puts it back."""
    saved = {}

    def setup(root, run_dir):
        full = os.path.join(run_dir, path)
        with open(full, "rb") as f:
            saved["bytes"] = f.read()
        _write(full, data(saved["bytes"]) if callable(data) else data)

    def teardown(root, run_dir):
        _write(os.path.join(run_dir, path), saved["bytes"])

    return setup, teardown


def _config_file(name: str, data: bytes):
    def setup(root, run_dir):
        _write(os.path.join(root, name), data)

    return setup, None


def _ckpt_damaged():
    saved = {}

    def setup(root, run_dir):
        step = os.path.join(run_dir, "ckpt", "il", "0")
        saved["copy"] = os.path.join(root, "il-backup")
        shutil.copytree(step, saved["copy"])
        for d, _, files in os.walk(step):
            for f in files:
                if os.path.getsize(os.path.join(d, f)):
                    _write(os.path.join(d, f), b"\x00garbage")

    def teardown(root, run_dir):
        step = os.path.join(run_dir, "ckpt", "il", "0")
        shutil.rmtree(step)
        shutil.copytree(saved["copy"], step)
        shutil.rmtree(saved["copy"])

    return setup, teardown


RUN = "{run}"  # replaced by the run directory
ROOT = "{root}"  # replaced by the fixture's folder (config files written there)
EXPERT = "data/expert_step-00000.arrayrecord"

CASES = [
    # --- overrides and values
    ("unknown key", ["collect", "expert", "model.nope=1"], "unknown config key 'model.nope'", None),
    ("wrong type", ["collect", "expert", "model.num_layers=x"], "'model.num_layers'", None),
    ("negative seed", ["collect", "expert", "seed=-7"], "seed=-7: expected an integer in [0, 2**32)", None),
    ("huge seed", ["collect", "expert", "seed=100000000000000000000000"], "seed=1000000000", None),
    ("huge vocabulary", ["collect", "expert", "tokenizer.vocab_size=99999999999999999999"], "tokenizer.vocab_size=",
     None),
    ("fraction above 1", ["collect", "expert", "data.valid_fraction=1.5"], "data.valid_fraction=1.5", None),
    ("duplicate seeds", ["collect", "expert", "recipe.seeds=[0,0]"], "recipe.seeds=[0, 0]", None),
    ("pass@k above samples", ["collect", "expert", "eval.pass_k=4"], "eval.pass_k=[4]", None),
    ("unknown environment", ["collect", "expert", "env.name=nope"], "env.name='nope'", None),
    ("heads not dividing", ["collect", "expert", "model.num_heads=5"], "model.num_heads=5", None),
    ("zero RL temperature", ["collect", "expert", "rl.temperature=0"], "rl.temperature=0", None),
    ("override without a value", ["collect", "expert", "a.yaml", "b.yaml"], "unexpected argument 'b.yaml'", None),
    ("a section set to a value", ["collect", "expert", "model=3", "model.num_layers=2"], "model", None),
    # --- config files
    ("missing config file", ["collect", "expert", f"{ROOT}/nope.yaml"], "nope.yaml' not found", None),
    ("config not YAML", ["collect", "expert", f"{ROOT}/broken.yaml"], "broken.yaml: not valid YAML",
     _config_file("broken.yaml", b"model: [1, 2\n")),
    ("config not UTF-8", ["collect", "expert", f"{ROOT}/latin.yaml"], "latin.yaml: line 2: not UTF-8",
     _config_file("latin.yaml", b"seed: 1\nrun_dir: caf\xe9\n")),
    ("config a list", ["collect", "expert", f"{ROOT}/list.yaml"], "list.yaml: expected a mapping",
     _config_file("list.yaml", b"- 1\n- 2\n")),
    ("config with a python tag", ["collect", "expert", f"{ROOT}/tag.yaml"], "tag.yaml: not valid YAML",
     _config_file("tag.yaml", b"seed: !!python/object/apply:os.system ['echo hi']\n")),
    # --- CLI flags
    ("negative count", ["envs", "check", "household", "--n", "-3"], "argument --n: -3 is not a positive count", None),
    ("zero eval tasks", ["eval", RUN, "--stage", "il", "--n", "0"], "argument --n: 0 is not a positive count", None),
    ("not an integer", ["data", "show", RUN, "--n", "two"], "argument --n: 'two' is not an integer", None),
    ("negative index", ["envs", "play", "household", "--index", "-1"], "argument --index: -1 is negative", None),
    ("unknown objective", ["data", "show", RUN, "--objective", "zz"], "invalid choice: 'zz'", None),
    ("unknown command", ["nope"], "invalid choice: 'nope'", None),
    ("option without =", ["envs", "show", "household", "train-d1-0", "-o", "colour"], "expected KEY=VALUE", None),
    ("option with code", ["envs", "check", "household", "--n", "1", "-o", "x=!!python/object/apply:os.system [1]"],
     "the value is not plain YAML data", None),
    # --- demonstrations (JSONL)
    ("missing JSONL", ["collect", "expert", "experience.source=jsonl", f"experience.trajectories={ROOT}/no.jsonl"],
     "no.jsonl' : no such file".replace("' :", "':"), None),
    ("JSONL bad line", ["collect", "expert", "experience.source=jsonl", f"experience.trajectories={ROOT}/bad.jsonl"],
     "bad.jsonl: 1 bad line(s): line 1:", _config_file("bad.jsonl", b'{"task": "train-d1-0", "actions": [\n')),
    ("JSONL not UTF-8", ["collect", "expert", "experience.source=jsonl", f"experience.trajectories={ROOT}/l1.jsonl"],
     "l1.jsonl: 1 bad line(s): line 1: not UTF-8 text", _config_file("l1.jsonl", b'{"task": "caf\xe9"}\n')),
    # --- the run's records
    ("truncated shard", ["data", "stats", RUN], f"{EXPERT}: ", _damage(EXPERT, lambda b: b[: len(b) // 2])),
    ("garbled sidecar", ["data", "stats", RUN], f"{EXPERT}.json: not valid JSON", _damage(EXPERT + ".json", b"{x")),
    ("garbled manifest", ["data", "stats", RUN], "manifest.json: not valid JSON",
     _damage("data/manifest.json", b'{"expert_step": ')),
    ("changed settings", ["collect", "explore", "experience.explore.k=3"], "other settings (differing: k)", None),
    ("damaged checkpoint", ["eval", RUN, "--stage", "il", "--n", "1", "--split", "test"],
     "ckpt/il: checkpoint step 0 cannot be restored", _ckpt_damaged()),
    ("stage without checkpoint", ["eval", RUN, "--stage", "sr", "--n", "1"], "sr", None),
    ("not a run directory", ["data", "stats", f"{ROOT}/nothing"], "nothing' has no config.yaml", None),
]


@pytest.mark.parametrize("name, argv, expected, fixture", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_one_error_line_and_changes_no_record(run, capsys, name, argv, expected, fixture):
    root, run_dir = run
    setup, teardown = fixture or (None, None)
    if setup:
        setup(str(root), run_dir)
    before = _digest(run_dir)
    args = [a.replace(RUN, run_dir).replace(ROOT, str(root)) for a in argv]
    if args[0] == "collect":  # commands on the run: its directory and the settings it was collected with
        args = [*args[:2], *BASE, *TINY, f"run_dir={run_dir}", *args[2:]]
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exited:
            raise SystemExit(main(args))
        out, err = capsys.readouterr()
        assert exited.value.code == 2, (name, err[-2000:])
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ee-jax: error: "), (name, err[-2000:])
        assert expected in lines[0], (name, lines[0])
        assert _digest(run_dir) == before, name  # nothing recorded changed
        assert "hi" not in out
    finally:
        if teardown:
            teardown(str(root), run_dir)
    assert len(CASES) >= 30
