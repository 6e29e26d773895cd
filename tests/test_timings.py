"""The run's time ledger: appends, per-stage sums over invocations, seeds, torn lines."""

from ee_jax.pipeline.timings import append_timing, read_timings, total_timings, worked_seconds


def test_ledger_sums_invocations_per_stage_and_seed(tmp_path):
    path = str(tmp_path / "run" / "timings.jsonl")
    assert read_timings(path) == [] and total_timings(path) == {}
    append_timing(path, "collect_expert", 2.0)
    append_timing(path, "train_il", 30.0, seed=0, interrupted=True)  # a preempted first try
    append_timing(path, "train_il", 12.5, seed=0)  # the resumed rest
    append_timing(path, "train_il", 40.0, seed=1)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"stage": "eval_il", "sec')  # a run killed mid-write leaves a torn line
    entries = read_timings(path)
    assert [e["stage"] for e in entries] == ["collect_expert", "train_il", "train_il", "train_il"]
    assert entries[1]["interrupted"] is True and "interrupted" not in entries[2]
    assert total_timings(path) == {"collect_expert": 2.0, "train_il": 82.5}
    assert total_timings(path, seed=0) == {"train_il": 42.5}
    append_timing(path, "eval_il", 3.0, seed=1)  # appends after a torn line still count
    assert total_timings(path, seed=1) == {"train_il": 40.0, "eval_il": 3.0}


def test_worked_seconds_leave_out_seeds_that_only_rechecked(tmp_path):
    path = str(tmp_path / "timings.jsonl")
    append_timing(path, "train_il", 0.1, seed=0, skipped=True)  # trained before the ledger existed
    append_timing(path, "train_il", 50.0, seed=1, interrupted=True)
    append_timing(path, "train_il", 10.0, seed=1)
    append_timing(path, "train_il", 0.2, seed=1, skipped=True)  # a later re-check still adds its time
    append_timing(path, "eval_il", 7.0, seed=1)
    entries = read_timings(path)
    assert entries[0]["skipped"] is True and "skipped" not in entries[1]
    assert worked_seconds(entries, "train_il") == {"1": 60.2}
    assert worked_seconds(entries, "eval_il") == {"1": 7.0} and worked_seconds(entries, "train_sr") == {}
