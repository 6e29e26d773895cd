"""Reports of multi-seed runs: numbers recomputed from episode logs, across-seed statistics checked by
hand, the markdown tables, the plots, and summaries that disagree with their logs.

The run directories are synthetic: eval summaries + episode logs (self-consistent, written here in
the documented input format), training budgets, metrics.jsonl and the run's config.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import pytest

from ee_jax.config import save_config
from ee_jax.eval.metrics import wilson_interval
from ee_jax.report import ReportError, build_report, collect_results

N = 10  # episodes per (method, seed, split): one per task
# wins per seed: success = wins / N
WINS = {
    "il": {"test": [4, 5, 6], "ood": [2, 3, 4]},
    "iwm": {"test": [6, 6, 9], "ood": [3, 3, 3]},
    "sr": {"test": [5, 7]},  # seeds 0 and 1 only, no ood split
}
WM_ACC = {"iwm": [0.5, 0.6, 0.7], "sr": [0.4, 0.5]}


def episodes(method: str, seed: int, split: str, wins: int) -> list[dict]:
    """``N`` episodes of distinct tasks, the first ``wins`` won; 4 steps each, every second has one
    invalid action; score 1 when won else 0.25; reward 1 when won."""
    out = []
    for i in range(N):
        won = i < wins
        out.append({"task_id": f"{split}-{i}", "split": split, "sample": 0, "seed": seed, "goal": f"goal {i}",
                    "won": won, "score": 1.0 if won else 0.25, "reward": 1.0 if won else 0.0, "steps": 4,
                    "invalid": i % 2, "ended": "won" if won else "max_steps",
                    "transcript": [{"observation": "o", "reply": "a", "action": "a", "valid": True, "reward": 0.0,
                                    "done": False}] * 4, "final_observation": "end"})
    return out


def summary(wins: int) -> dict:
    """The split summary of :func:`episodes`, computed by hand."""
    return {"episodes": N, "tasks": N, "success": wins / N, "success_ci95": list(wilson_interval(wins, N)),
            "score": (wins + 0.25 * (N - wins)) / N, "reward": wins / N, "invalid_rate": (N // 2) / (4 * N),
            "steps": 4.0, "pass@1": wins / N, "ended": {"won": wins, "max_steps": N - wins}}


def write_json(path, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def write_seed(seed_dir: str, seed: int, method: str, splits: dict[str, int], wm_acc: float | None) -> None:
    """``eval/METHOD.json`` + ``eval/METHOD/SPLIT.jsonl`` and ``train/METHOD.json`` of one seed."""
    result = {"stage": method, "source": f"{seed_dir}/ckpt/{method}", "seed": seed, "env": "household",
              "difficulty": 1, "settings": {"tasks": N, "temperature": 0.0, "samples": 1, "max_invalid": 5},
              "created": "2025-01-01T00:00:00", "splits": {}, "world_model": None}
    for split, wins in splits.items():
        rel = f"eval/{method}/{split}.jsonl"
        os.makedirs(os.path.join(seed_dir, "eval", method), exist_ok=True)
        with open(os.path.join(seed_dir, rel), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(e) + "\n" for e in episodes(method, seed, split, wins))
        result["splits"][split] = {**summary(wins), "episodes_file": rel}
    if wm_acc is not None:
        result["world_model"] = {"split": "valid", "transitions": 64, "token_accuracy": wm_acc,
                                 "exact_match": wm_acc / 2, "loss": 2.0 - wm_acc}
    write_json(os.path.join(seed_dir, "eval", f"{method}.json"), result)
    stages = [{"stage": "iwm_wm", "steps": 40, "selected_step": 40, "selection": {"metric": "last"}}] \
        if method == "iwm" else []
    stages.append({"stage": method, "steps": 100 - 40 * (method == "iwm"), "selected_step": 50 + 10 * seed,
                   "selection": {"metric": "success", "value": 0.5}})
    write_json(os.path.join(seed_dir, "train", f"{method}.json"), {"method": method, "stages": stages, "updates": 100})


def write_metrics(seed_dir: str, seed: int) -> None:
    """Loss curves of stage il; steps 20..30 written twice (a resume): the second copy must win."""
    recs = [{"step": s, "time": 0.0, "il/train/loss": 5.0 - s / 100, "il/train/lr": 1e-3} for s in (10, 20, 30)]
    recs.append({"step": 30, "il/valid/loss": 4.8, "il/valid/accuracy": 0.1, "il/valid/success": 0.2 + seed / 10})
    recs += [{"step": s, "time": 1.0, "il/train/loss": 4.0 - s / 100 - seed / 10} for s in (20, 30, 40)]
    recs.append({"step": 40, "iwm_wm/train/loss": 3.0})
    with open(os.path.join(seed_dir, "metrics.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
        f.write('{"step": 50, "il/train/lo')  # a crash mid-append: skipped


@pytest.fixture
def run_dir(tmp_path, tiny_config):
    """Three seeds of il and iwm (test + ood), sr on seeds 0 and 1 (test only)."""
    root = tmp_path / "exp"
    cfg = tiny_config("env.difficulty=1", "recipe.seeds=[0,1,2]", "recipe.epochs=3", "experience.explore.k=4")
    save_config(cfg, root / "config.yaml")
    write_json(str(root / "data" / "manifest.json"),
               {"expert_step": {"units": 64, "records": 500, "by_split": {"train": 400, "valid": 100}}})
    for seed in range(3):
        sdir = str(root / "seeds" / str(seed))
        for method, splits in WINS.items():
            if seed < len(splits["test"]):
                accs = WM_ACC.get(method)
                write_seed(sdir, seed, method, {s: w[seed] for s, w in splits.items()}, accs[seed] if accs else None)
        write_metrics(sdir, seed)
    return str(root)


def read(path) -> str:
    return pathlib.Path(path).read_text(encoding="utf-8")


def std(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0


def test_collect_results_recomputes_from_logs(run_dir):
    res = collect_results(run_dir)
    assert res["seeds"] == [0, 1, 2] and res["methods"] == ["il", "iwm", "sr"] and res["splits"] == ["test", "ood"]
    assert set(res["evals"]["sr"]) == {"0", "1"} and set(res["evals"]["sr"]["0"]["splits"]) == {"test"}
    got = res["evals"]["iwm"]["2"]["splits"]["test"]
    assert got["success"] == 0.9 and got["episodes"] == 10 and got["invalid_rate"] == 0.125
    assert got["episodes_file"] == "eval/iwm/test.jsonl" and got["ended"]["won"] == 9
    # metrics: last record per (key, step); the cut-off last line is skipped
    il_loss = res["metrics"]["1"]["il/train/loss"]
    assert il_loss == [[10, 4.9], [20, pytest.approx(3.7)], [30, pytest.approx(3.6)], [40, pytest.approx(3.5)]]
    assert res["metrics"]["2"]["il/valid/success"] == [[30, pytest.approx(0.4)]]
    assert res["training"]["iwm"]["0"]["stages"][0]["stage"] == "iwm_wm"


def test_report_numbers_by_hand(run_dir):
    rep = build_report(run_dir, title="Household, tiny")
    on_disk = json.loads(read(os.path.join(run_dir, "report.json")))
    assert on_disk == json.loads(json.dumps(rep))
    r = rep["results"]
    il, iwm, sr = r["il"]["test"], r["iwm"]["test"], r["sr"]["test"]
    assert il["success"]["per_seed"] == {"0": 0.4, "1": 0.5, "2": 0.6}
    assert il["success"]["mean"] == pytest.approx(0.5) and il["success"]["std"] == pytest.approx(0.1)
    assert iwm["success"]["mean"] == pytest.approx(0.7) and iwm["success"]["std"] == pytest.approx(math.sqrt(0.03))
    # delta: mean and std of the per-seed differences (.2, .1, .3), not the difference of means' stds
    assert iwm["delta_vs_il"]["per_seed"] == pytest.approx({"0": 0.2, "1": 0.1, "2": 0.3})
    assert iwm["delta_vs_il"]["mean"] == pytest.approx(0.2) and iwm["delta_vs_il"]["std"] == pytest.approx(0.1)
    assert il["delta_vs_il"] is None
    ood = r["iwm"]["ood"]["delta_vs_il"]
    assert ood["mean"] == pytest.approx(0.0) and ood["std"] == pytest.approx(0.1)
    # sr: two seeds, deltas only over the seeds both methods have
    assert sr["seeds"] == ["0", "1"] and sr["success"]["std"] == pytest.approx(std([0.5, 0.7]))
    assert sr["delta_vs_il"]["mean"] == pytest.approx(0.15) and sr["delta_vs_il"]["std"] == pytest.approx(
        std([0.1, 0.2]))
    assert "ood" not in r["sr"]
    # Wilson intervals: each seed's, then averaged
    cis = [wilson_interval(w, 10) for w in (4, 5, 6)]
    assert il["success_ci95"]["mean"] == pytest.approx([sum(c[0] for c in cis) / 3, sum(c[1] for c in cis) / 3])
    assert il["success_ci95"]["range"] == pytest.approx([cis[0][0], cis[2][1]])
    assert il["score"]["mean"] == pytest.approx((5 + 0.25 * 5) / 10) and il["invalid_rate"]["mean"] == 0.125
    assert il["steps"] == {"per_seed": {"0": 4.0, "1": 4.0, "2": 4.0}, "mean": 4.0, "std": 0.0, "n": 3}
    assert il["pass@k"]["pass@1"]["mean"] == pytest.approx(0.5)
    # world model, training budget, settings
    wm = rep["world_model"]
    assert wm["il"] is None and wm["iwm"]["token_accuracy"]["mean"] == pytest.approx(0.6)
    assert wm["iwm"]["token_accuracy"]["std"] == pytest.approx(0.1) and wm["iwm"]["loss"]["mean"] == pytest.approx(1.4)
    assert wm["sr"]["exact_match"]["mean"] == pytest.approx(0.225)
    tr = rep["training"]["iwm"]
    assert tr["updates"]["mean"] == 100 and tr["stages"]["iwm_wm"]["steps"] == {"0": 40, "1": 40, "2": 40}
    assert tr["stages"]["iwm"]["selected_step"] == {"0": 50, "1": 60, "2": 70}
    s = rep["settings"]
    assert s["env"] == "household" and s["difficulty"] == 1 and s["explore_k"] == 4 and s["epochs"] == 3.0
    assert s["seeds"] == [0, 1, 2] and s["expert"]["trajectories"] == 64
    assert s["model"]["preset"] == "ee-1m" and s["model"]["params"] > 0


def test_report_markdown_and_plots(run_dir):
    rep = build_report(run_dir)
    md = read(os.path.join(run_dir, "report.md"))
    lines = md.splitlines()
    assert "| Method | test | Δ vs IL (test) | ood | Δ vs IL (ood) |" in lines
    ci = rep["results"]["il"]["test"]["success"]["pooled"]["ci95"]
    ci_ood = rep["results"]["il"]["ood"]["success"]["pooled"]["ci95"]
    assert (f"| IL | 50.0 [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | — | 30.0 [{100 * ci_ood[0]:.1f}, "
            f"{100 * ci_ood[1]:.1f}] | — |") in lines
    assert rep["table"] in md and lines[lines.index(rep["table"].splitlines()[-1]) - 2].startswith("| IL |")
    d = rep["results"]["iwm"]["test"]["delta_vs_il"]["paired"]
    assert any(line.startswith("| IWM | 70.0 [") and f"| +20.0 [{100 * d['ci95'][0]:+.1f}, " in line
               for line in lines)
    # per-seed table: mean ± std of seeds, and of the per-seed differences
    assert "| IWM | 70.0 ± 17.3 | +20.0 ± 10.0 | 30.0 ± 0.0 | +0.0 ± 10.0 |" in lines
    assert "| SR | 60.0 ± 14.1 | +15.0 ± 7.1 | — | — |" in lines
    assert "| IWM | 60.0 ± 10.0 | 30.0 ± 5.0 | 1.400 ± 0.100 | 64 |" in lines  # world-model table
    assert "- Environment: household (difficulty 1)" in lines and "- Seeds: 0, 1, 2" in lines
    assert "64 trajectories" in md and "K = 4" in md
    assert rep["plots"] == ["success.png", "learning_curves.png", "world_model.png"]
    for name in rep["plots"]:
        path = os.path.join(run_dir, "plots", name)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000
        assert f"](plots/{name})" in md
    assert not [n for n in os.listdir(run_dir) if ".tmp" in n]  # atomic writes leave no temporaries


def test_one_seed_only_il_plain_run(tmp_path):
    """A plain run directory (no seeds/): one seed, one method, no metrics, no world model."""
    run = str(tmp_path / "single")
    write_seed(run, 7, "il", {"test": 3}, None)
    rep = build_report(run)
    cell = rep["results"]["il"]["test"]
    assert rep["seeds"] == [7] and rep["methods"] == ["il"] and rep["splits"] == ["test"]
    pooled = cell["success"].pop("pooled")
    assert cell["success"] == {"per_seed": {"7": 0.3}, "mean": 0.3, "std": 0.0, "n": 1}
    assert pooled["mean"] == pytest.approx(0.3) and pooled["seeds"] == 1 and pooled["tasks"] == 10
    assert cell["delta_vs_il"] is None and rep["world_model"] == {"il": None}
    assert rep["plots"] == ["success.png"]
    md = read(os.path.join(run, "report.md"))
    assert "| IL | 30.0 ± 0.0 | — |" in md and "| IL | 30.0 [" in md and "World model" not in md
    assert "1 seed (7)" in md


def test_iwm_without_il_has_no_delta(tmp_path):
    run = str(tmp_path / "noil")
    for seed in (0, 1):
        write_seed(os.path.join(run, "seeds", str(seed)), seed, "iwm", {"test": 5 + seed}, 0.5)
    rep = build_report(run)
    assert rep["methods"] == ["iwm"] and rep["results"]["iwm"]["test"]["delta_vs_il"] is None
    assert rep["results"]["iwm"]["test"]["success"]["mean"] == pytest.approx(0.55)


def test_summary_disagreeing_with_its_log_names_the_file(run_dir):
    path = os.path.join(run_dir, "seeds", "1", "eval", "iwm.json")
    data = json.loads(read(path))
    data["splits"]["ood"]["success"] = 0.5  # the log says 0.3
    write_json(path, data)
    with pytest.raises(ReportError) as e:
        build_report(run_dir)
    msg = str(e.value)
    assert path in msg and "splits.ood.success" in msg and os.path.join("seeds", "1", "eval/iwm/ood.jsonl") in msg
    assert not os.path.exists(os.path.join(run_dir, "report.json"))


def test_log_edited_after_the_summary_is_refused(run_dir):
    log = os.path.join(run_dir, "seeds", "0", "eval", "il", "test.jsonl")
    lines = read(log).splitlines()
    ep = json.loads(lines[-1])
    ep["invalid"] = 3  # more invalid actions than the summary counted
    lines[-1] = json.dumps(ep)
    pathlib.Path(log).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ReportError, match=r"splits\.test\.invalid_rate .* its episode log .*il/test\.jsonl"):
        collect_results(run_dir)


def test_missing_log_and_empty_run_are_clear_errors(run_dir, tmp_path):
    log = os.path.join(run_dir, "seeds", "2", "eval", "sr", "test.jsonl")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    write_seed(os.path.join(run_dir, "seeds", "2"), 2, "sr", {"test": 5}, None)
    os.remove(log)
    with pytest.raises(ReportError, match=f"{log}: episode log not found"):
        collect_results(run_dir)
    with pytest.raises(ReportError, match="no evaluation results"):
        collect_results(str(tmp_path))


def test_rl_curves_plot_draws_rl_stages_and_keeps_them_out_of_the_learning_curves():
    from ee_jax.report.plots import _is_rl, learning_curves_plot, rl_curves_plot

    rl = {f"{stage}/{key}": [[s, 0.1 * s + seed] for s in (1, 2, 3)]
          for stage in ("grpo_from_il", "grpo_from_sr") for key in ("rl/reward", "rl/success", "rl/kl")
          for seed in (0,)}
    metrics = {"0": {**rl, "grpo_from_il/valid/success": [[2, 0.5]]}, "1": rl}
    png = rl_curves_plot(metrics)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert learning_curves_plot(metrics) is None  # RL stages have their own figure
    assert rl_curves_plot({"0": {"il/train/loss": [[1, 2.0]]}}) is None
    assert _is_rl("grpo_from_il") and _is_rl("ppo_from_init") and not _is_rl("iwm_wm") and not _is_rl("grpo")


def test_settings_name_the_rl_hyperparameters_when_the_run_has_rl_rows(tiny_config):
    import dataclasses

    from ee_jax.report.markdown import settings_lines

    rl = dataclasses.asdict(tiny_config("rl.steps=20", "rl.lr=2e-4", "rl.score_reward=5", "rl.max_invalid=2",
                                        "rl.max_turns=15").rl)
    lines = settings_lines({"rl": rl, "eval": {"max_invalid": 10}, "seeds": [0]})
    assert lines[-2] == ("- RL (GRPO, the same settings from every start): 20 steps x 16 tasks x 8 rollouts at "
                         "temperature 1, lr 0.0002, KL 0.01 (low_var), clip 0.2/0.2; reward 10 x success + 5 x score "
                         "- 0.1 per invalid action; an episode ends after 2 invalid actions or 15 turns")
    assert not any(line.startswith("- RL") for line in settings_lines({"rl": None, "seeds": [0]}))


def test_rl_table_pairs_each_rl_row_with_its_start_per_seed():
    from ee_jax.report.markdown import rl_table

    def cell(per_seed):
        vals = list(per_seed.values())
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        return {"success": {"per_seed": per_seed, "mean": mean, "std": std}}

    report = {"splits": ["test"], "methods": ["il", "sr", "grpo_from_il", "grpo_from_sr", "grpo_from_init"],
              "results": {"il": {"test": cell({"0": 0.1, "1": 0.3})}, "sr": {"test": cell({"0": 0.2, "1": 0.4})},
                          "grpo_from_il": {"test": cell({"0": 0.2, "1": 0.2})},
                          "grpo_from_sr": {"test": cell({"0": 0.5, "1": 0.5})},
                          "grpo_from_init": {"test": cell({"0": 0.05, "1": 0.0})}}}
    lines = rl_table(report)
    # IL→GRPO: gains +10 and -10 points -> +0.0 ± 14.1; SR→GRPO: +30 and +10 -> +20.0 ± 14.1
    assert "| IL→GRPO | 20.0 ± 14.1 | 20.0 ± 0.0 | +0.0 ± 14.1 |" in lines
    assert "| SR→GRPO | 30.0 ± 14.1 | 50.0 ± 0.0 | +20.0 ± 14.1 |" in lines
    assert "| init→GRPO | — | 2.5 ± 3.5 | — |" in lines  # no evaluated start to pair with
    assert rl_table({"splits": ["test"], "methods": ["il"], "results": report["results"]}) == []


def test_paired_statistics_by_hand(run_dir):
    rep = build_report(run_dir)
    r = rep["results"]
    # IL wins the first 4 / 5 / 6 of 10 tasks per seed: 15 of 30 (seed, task) pairs
    assert r["il"]["test"]["success"]["pooled"]["mean"] == pytest.approx(0.5)
    assert r["il"]["test"]["success"]["pooled"]["tasks"] == 10 and r["il"]["test"]["success"]["pooled"]["seeds"] == 3
    # IWM wins the first 6 / 6 / 9: it wins 2 + 1 + 3 pairs IL loses and loses none IL wins: +6 / 30
    paired = r["iwm"]["test"]["delta_vs_il"]["paired"]
    assert paired["mean"] == pytest.approx(0.2) and paired["seeds"] == 3 and paired["tasks"] == 10
    assert paired["ci95"][0] >= 0.0 and paired["ci95"][1] <= 0.6
    # SR exists for seeds 0 and 1 only: paired on those (wins 5, 7 against 4, 5: +3 of 20)
    sr = r["sr"]["test"]["delta_vs_il"]["paired"]
    assert sr["seeds"] == 2 and sr["mean"] == pytest.approx(0.15)


def test_flags_privileged_settings_and_final_step_selection(run_dir):
    import yaml

    cfg_path = os.path.join(run_dir, "config.yaml")
    cfg = yaml.safe_load(read(cfg_path))
    cfg["experience"]["reflect"]["generator"] = "oracle_template"
    with open(cfg_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f)
    path = os.path.join(run_dir, "seeds", "1", "train", "il.json")
    record = json.loads(read(path))
    record["stages"][-1].update(selected_step=100, selection={"rule": "best", "evaluations": [
        {"step": s, "score": 0.1} for s in (25, 50, 75, 100)]})
    write_json(path, record)
    rep = build_report(run_dir)
    assert rep["settings"]["privileged"] == ["SR reflections by oracle_template (privileged: reward + hand-written "
                                             "notes)"]
    assert rep["training"]["il"]["selected_final_step"] == ["1"] and rep["training"]["iwm"]["selected_final_step"] == []
    assert rep["training"]["il"]["selection_evaluations"]["1"] == 4
    md = read(os.path.join(run_dir, "report.md"))
    assert "- **Privileged:** SR reflections by oracle_template (privileged: reward + hand-written notes)." in md
    assert "- **IL: still improving at the end of its budget**: the best valid checkpoint is its final step (seed 1)." \
        in md
    assert "reflections: oracle_template (privileged: reward + hand-written notes)" in md


def test_data_efficiency_pairs_across_fractions_by_hand(tmp_path):
    """Two fractions of one size: IL wins 2 / 6 of 10 tasks (half / all the data), SR 7 / 8; seeds 0, 1."""
    from ee_jax.sweep.data_efficiency import data_efficiency, render_markdown, success_vs_fraction

    wins = {0.5: {"il": 2, "sr": 7}, 1.0: {"il": 6, "sr": 8}}
    points = []
    for fraction, methods in wins.items():
        run = tmp_path / f"f{fraction:g}" / "ee-1m"
        for seed in (0, 1):
            for method, w in methods.items():
                write_seed(str(run / "seeds" / str(seed)), seed, method, {"test": w}, None)
        points.append((fraction, "ee-1m", str(run)))
    got = data_efficiency(points, "test")
    rows = {(r["fraction"], r["method"]): r for r in got["rows"]}
    assert rows[(0.5, "il")]["success"]["mean"] == pytest.approx(0.2)
    # SR with half the data against IL with all of it: +1 on tasks 6 (one of 10 per seed) -> +0.1
    half_sr = rows[(0.5, "sr")]
    assert half_sr["vs_il_full_data"]["mean"] == pytest.approx(0.1) and half_sr["vs_il_same_fraction"]["mean"] == \
        pytest.approx(0.5)
    assert half_sr["vs_il_same_fraction"]["significant"] and not half_sr["vs_il_full_data"]["significant"]
    assert rows[(1.0, "il")]["vs_il_full_data"] is None and rows[(0.5, "il")]["vs_il_full_data"]["mean"] == \
        pytest.approx(-0.4)
    # SR with all the data: +0.2 (tasks 6, 7 on both seeds): the interval is [0, 0.4] at best -> not significant
    assert got["answers"] == [{"size": "ee-1m", "method": "sr", "smallest_fraction_beating_full_il": None,
                               "difference": None}]
    md = "\n".join(render_markdown(got))
    assert "| ee-1m | 0.5 | SR | 2 | 70.0 [" in md and "at no fraction of the expert data" in md
    assert success_vs_fraction(got)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("reflect,expected", [
    ({"generator": "grounded"}, []),
    ({"generator": "template"}, ["SR reflections by template (privileged: reward + hand-written notes; "
                                 "oracle_template's name before 2026-12)"]),
    ({"generator": "self", "show_reward": False}, []),
    ({"generator": "self", "show_reward": True}, ["SR reflections by self with the environment's reward in the "
                                                  "prompt (privileged: experience.reflect.show_reward)"]),
    ({"generator": "self"}, ["SR reflections by self with the environment's reward in the prompt (privileged: "
                             "experience.reflect.show_reward)"]),  # recorded before the key existed
])
def test_privileged_settings_of_old_and_new_runs(reflect, expected):
    from ee_jax.report.aggregate import privileged_settings

    cfg = {"recipe": {"methods": ["il", "sr"]}, "experience": {"reflect": reflect}}
    assert privileged_settings(cfg) == expected
    assert privileged_settings({**cfg, "recipe": {"methods": ["il", "iwm"]}}) == []  # no reflections trained on
