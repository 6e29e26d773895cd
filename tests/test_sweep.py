"""``ee-jax sweep``: a real two-size sweep end to end, the scaling arithmetic by hand, bad sweep files."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import yaml

from ee_jax.config import ConfigError
from tests.test_recipes import AGENT

SIZES = {"ee-1m": ["model.d_model=32", "model.ffn_dim=64"], "ee-4m": ["model.d_model=48", "model.ffn_dim=96"]}
BASE = [o for o in AGENT if not o.startswith(("model.preset", "model.d_model", "model.ffn_dim"))] + [
    "experience.tasks.train=6", "experience.tasks.valid=2", "experience.reflect.alternatives=1", "recipe.epochs=1",
    "recipe.valid_tasks=0", "recipe.select=last", "eval.tasks=2", "eval.splits=[test]", "eval.max_new_tokens=8",
    "eval.wm_transitions=0",
    "train.eval_every=1000", "train.checkpoint_every=1000",
]


def _nested(overrides):
    from ee_jax.config.loader import _parse_overrides

    return _parse_overrides(overrides)


def _sweep_file(tmp_path, **changes):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_nested(BASE + ["model.preset=ee-1m"])))
    spec = {"base": str(base), "run_dir": str(tmp_path / "sweep"), "sizes": list(SIZES), "methods": ["il", "sr"],
            "seeds": [0], "size_overrides": SIZES, **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _cli(*args):
    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "sweep", *args, "--no-progress", "--json"],
                         capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_size_sweep_runs_every_point_shares_data_and_reports(tmp_path):
    from ee_jax.config import load_config
    from ee_jax.models.accounting import train_flops_per_token

    path = _sweep_file(tmp_path)
    out = _cli(path)
    run = tmp_path / "sweep"
    # One collection for both sizes: their data and tokenizer are links to f1/.
    for size in SIZES:
        for part in ("data", "tokenizer"):
            assert os.path.realpath(run / "f1" / size / part) == os.path.realpath(run / "f1" / part)
    rows = {(r["size"], r["method"]): r for r in out["rows"]}
    assert set(rows) == {(s, m) for s in SIZES for m in ("il", "sr")}
    assert rows[("ee-4m", "il")]["params"] > rows[("ee-1m", "il")]["params"]
    for (size, method), r in rows.items():
        with open(run / "f1" / size / "report.json") as f:
            point = json.load(f)
        assert r["test"]["per_seed"] == point["results"][method]["test"]["success"]["per_seed"]
        cfg = load_config(str(run / "f1" / size / "config.yaml"))
        with open(run / "f1" / size / "seeds" / "0" / "train" / f"{method}.json") as f:
            updates = json.load(f)["updates"]
        model = dataclasses.replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
        flops = updates * cfg.train.batch_size * cfg.train.seq_len * train_flops_per_token(model, cfg.train.seq_len)
        assert r["train_flops"] == {"0": flops}
    # sr at each size against il at the same and at the larger size: three comparisons.
    pairs = {(c["size"], c["il_size"]) for c in out["efficiency"]["comparisons"]}
    assert pairs == {("ee-1m", "ee-1m"), ("ee-1m", "ee-4m"), ("ee-4m", "ee-4m")}
    for size in SIZES:
        p = out["planning"][size]
        assert p["compile_s"] > 0 and p["peak_bytes"] > 0 and p["tokens_per_s"] > 0 and 0 < p["mfu"] < 1
        assert p["params"] == rows[(size, "il")]["params"]
    for name in ("scaling.md", "scaling.json", "plots/success_vs_params.png", "plots/success_vs_flops.png"):
        assert os.path.getsize(run / name) > 0
    text = (run / "scaling.md").read_text()
    assert "## Parameter efficiency" in text and "| ee-4m |" in text

    # The report alone is rebuilt from the points (no training: records untouched), with the same rows.
    records = [run / "f1" / size / "seeds" / "0" / "train" / f"{m}.json" for size in SIZES for m in ("il", "sr")]
    written = [os.stat(r).st_mtime_ns for r in records]
    again = _cli(path, "--report-only")
    assert again["rows"] == out["rows"] and again["planning"] == out["planning"]
    assert [os.stat(r).st_mtime_ns for r in records] == written
    status = json.loads((run / "sweep_status.json").read_text())
    assert set(status["points"]) == {"f1/ee-1m", "f1/ee-4m"}  # each finished point is on record
    # Wall clock per point and per method from each point's time ledger, in the status and the table.
    for size in SIZES:
        stages = status["points"][f"f1/{size}"]["stage_seconds"]
        assert status["points"][f"f1/{size}"]["seconds"] >= sum(stages.values()) > 0
        for method in ("il", "sr"):
            r = rows[(size, method)]
            assert r["train_seconds"] == {"0": pytest.approx(stages[f"train_{method}"], abs=0.01)}
            assert r["eval_seconds"] == {"0": pytest.approx(stages[f"eval_{method}"], abs=0.01)}
            assert r["train_seconds"]["0"] > 0 and r["eval_seconds"]["0"] > 0
    assert "train + eval time / seed" in text and " min |" in text

    # --export-results: the results and data without checkpoints; the report rebuilds from the copy, and
    # the copy put back at run_dir (a fresh machine) resumes the sweep without retraining or re-evaluating.
    exported = tmp_path / "exported"
    info = _cli(path, "--export-results", str(exported))
    assert sorted((p["name"], p["finished"]) for p in info["points"]) == [("f1/ee-1m", True), ("f1/ee-4m", True)]
    left = {d for _, dirs, _ in os.walk(exported) for d in dirs}
    assert not left & {"ckpt", "tb"}, left
    assert os.path.getsize(exported / "f1" / "data" / "manifest.json") > 0  # the data the sizes shared
    assert os.path.getsize(exported / "f1" / "tokenizer" / "spm.model") > 0
    assert 0 < info["bytes"] < 5e6
    assert _cli(path, f"run_dir={exported}", "--report-only")["rows"] == out["rows"]
    os.rename(run, tmp_path / "sweep-first-machine")
    import shutil

    shutil.copytree(exported, run, symlinks=True)
    evals = [run / "f1" / size / "seeds" / "0" / "eval" / f"{m}.json" for size in SIZES for m in ("il", "sr")]
    kept = [os.stat(p).st_mtime_ns for p in records + evals]
    resumed = _cli(path)
    assert [os.stat(p).st_mtime_ns for p in records + evals] == kept
    assert not resumed["missing_points"]
    timing = ("train_seconds", "eval_seconds", "train_seconds_mean", "eval_seconds_mean")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(resumed["rows"]) == strip(out["rows"])
    for a, b in zip(resumed["rows"], out["rows"], strict=True):  # + the resumed run's re-checks (seconds)
        assert b["train_seconds"]["0"] <= a["train_seconds"]["0"] < b["train_seconds"]["0"] + 5
    assert not any((run / "f1" / size / "seeds" / "0" / "ckpt").exists() for size in SIZES)


def test_dry_run_and_launch_print_every_point_and_run_nothing(tmp_path):
    path = _sweep_file(tmp_path, data_fractions=[1.0, 0.5], full_data_methods=["il_matched"])
    out = _cli(path, "--dry-run")
    names = [p["name"] for p in out["points"]]
    assert names == ["f1/ee-1m", "f1/ee-4m", "f0.5/ee-1m", "f0.5/ee-4m"]
    assert "experience.tasks.train=3" in out["points"][2]["overrides"]  # half of the base's 6 tasks
    # the matched-updates control at the full data only
    assert "recipe.methods=[il,sr,il_matched]" in out["points"][0]["overrides"]
    assert "recipe.methods=[il,sr]" in out["points"][2]["overrides"]
    assert "model.d_model=48" in out["points"][1]["overrides"]
    res = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "sweep", path, "--launch", "slurm",
                          "--launch-args", f"--out-dir {tmp_path / 'jobs'} --partition gpu", "--dry-run", "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("sbatch --parsable") == 4 and "--partition=gpu" in res.stdout
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "sweep").exists()


def test_paired_differences_and_the_efficiency_answer_by_hand():
    from ee_jax.sweep.scaling import efficiency, paired_difference

    d = paired_difference({"0": 0.30, "1": 0.20, "2": 0.25}, {"0": 0.20, "1": 0.20, "2": 0.20})
    # differences 0.10, 0.00, 0.05: mean 0.05, sd 0.05, t(0.975, 2) = 4.3027 -> half width 0.1242
    assert d["mean"] == pytest.approx(0.05) and d["n"] == 3
    assert d["ci95"] == pytest.approx([0.05 - 0.124209, 0.05 + 0.124209], abs=1e-5)

    def row(size, params, method, per_seed):
        return {"fraction": 1.0, "size": size, "params": params, "method": method, "test": {"per_seed": per_seed}}

    rows = [row("s", 1, "il", {"0": 0.1, "1": 0.1}), row("m", 4, "il", {"0": 0.3, "1": 0.5}),
            row("l", 16, "il", {"0": 0.6, "1": 0.6}),
            row("s", 1, "sr", {"0": 0.2, "1": 0.2}), row("m", 4, "sr", {"0": 0.6, "1": 0.7}),
            row("l", 16, "sr", {"0": 0.9, "1": 0.9})]
    eff = efficiency(rows, "test", margin=0.0)
    # sr@s vs il@m: -0.1 and -0.3 -> no. sr@m vs il@l: 0.0 and +0.1 -> matches (mean +0.05); the answer.
    answer = {a["method"]: a["answer"] for a in eff["answers"]}
    assert answer["iwm"] is None
    assert (answer["sr"]["size"], answer["sr"]["il_size"]) == ("m", "l")
    assert answer["sr"]["difference"]["mean"] == pytest.approx(0.05) and not answer["sr"]["established"]
    assert len(eff["comparisons"]) == 6  # sr@s vs s,m,l; sr@m vs m,l; sr@l vs l
    loose = {a["method"]: a["answer"] for a in efficiency(rows, "test", margin=0.25)["answers"]}
    assert (loose["sr"]["size"], loose["sr"]["il_size"]) == ("s", "m")  # within 25 points: -0.2 on average


@pytest.mark.parametrize("change,message", [
    ({"sizes": ["ee-1m", "ee-9m"]}, "sizes='ee-9m'"),
    ({"methods": ["sr"]}, "methods=['sr']"),
    ({"data_fractions": [0.0]}, "data_fractions=[0.0]"),
    ({"overrides": ["run_dir=x"]}, "overrides='run_dir=x'"),
    ({"size_overrides": {"ee-50m": []}}, "size_overrides=['ee-50m']"),
    ({"colour": "blue"}, "colour"),
    ({"full_data_methods": ["sr"]}, "full_data_methods=['sr']"),  # already in methods
])
def test_bad_sweep_files_name_the_key(tmp_path, change, message):
    from ee_jax.sweep import load_sweep

    with pytest.raises(ConfigError) as e:
        load_sweep(_sweep_file(tmp_path, **change))
    assert message in str(e.value)


def test_committed_sweep_reports_again_and_names_its_privileged_reflections(tmp_path):
    """The committed CPU sweep (recorded with the generator then called `template`) still builds its report
    from the copy, every number re-checked against the episode logs, and the report names the privilege."""
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    copy = tmp_path / "sweep"
    shutil.copytree(os.path.join(root, "docs", "results", "sweep-twx-cpu"), copy,
                    ignore=shutil.ignore_patterns("data", "tokenizer", "plots"))
    out = _cli(os.path.join(root, "configs", "sweeps", "scaling-twx-cpu.yaml"), f"run_dir={copy}", "--report-only")
    md = (copy / "scaling.md").read_text(encoding="utf-8")
    assert "**Privileged:** SR reflections by template (privileged: reward + hand-written notes" in md
    assert out["privileged"] and len(out["rows"]) == 12  # 4 sizes x 3 methods
