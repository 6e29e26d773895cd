"""The stage runner on a toy stage (a counter as the state): schedules, time boxes, resume, signals,
the one-step-late metrics check, and selection. The real stages (imitation, RL, LM) run through it in
test_recipes.py, test_rl.py, test_lm.py and test_distributed.py."""

import json
import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from ee_jax.train.guard import NonFiniteLossError, TrainingInterrupted
from ee_jax.train.runner import Deferred, Periodic, Schedule, StageRunner


def test_schedule_due():
    every = Schedule(every=3, at_end=True)
    assert [d for d in range(1, 11) if every.due(d, end=8, total=10)] == [3, 6, 8, 9]
    exact = Schedule(steps=frozenset({2, 5}), at_last=True)
    assert [d for d in range(1, 11) if exact.due(d, end=8, total=10)] == [2, 5, 10]
    assert not any(Schedule().due(d, 10, 10) for d in range(1, 11))


class Toy:
    """A stage whose state is the sum of the steps' values; ``losses[i]`` is step i's loss."""

    def __init__(self, root, losses, **kw):
        self.losses, self.fetched = losses, []
        self.runner = StageRunner(run_dir=str(root), ckpt_dir=str(root / "ckpt" / "toy"), stage="toy",
                                  total=len(losses), progress=False, **kw)
        self.state = {"total": jnp.zeros((), jnp.float32)}
        if self.runner.resumed_from is not None:
            self.state, _ = self.runner.restore({"total": jnp.zeros((), jnp.float32)})

    def step(self, i):
        self.dispatched = i + 1
        self.state = {"total": self.state["total"] + self.losses[i]}

        def check(m):
            self.fetched.append((i + 1, self.dispatched))
            if not np.isfinite(m["loss"]):
                raise NonFiniteLossError(f"step {i + 1}")

        return Deferred({"loss": jnp.float32(self.losses[i])}, check)

    def evaluate(self, done):  # the score of step d is -|d - 4|: the best checkpoint is step 4
        self.runner.evaluated(done, {"loss": float(abs(done - 4))}, history_prefix="valid_")

    def run(self, every_eval=2):
        with self.runner:
            start = self.runner.resumed_from or 0
            actions = [Periodic(Schedule(every=every_eval, at_end=True), self.evaluate)]
            reached = self.runner.run(start, self.step, lambda: self.state, actions)
            return reached, self.runner.finish(reached)


def test_time_box_resume_and_best_selection(tmp_path):
    losses = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    first = Toy(tmp_path, losses, stop_after=3, select="best", checkpoint_every=100, keep=1)
    reached, chosen = first.run()
    assert reached == 3 and chosen is None  # time-boxed: no selection yet
    # evaluations at 2 and at the time box's end (3), each checkpointed with its score
    assert [e["step"] for e in first.runner.evaluations] == [2, 3]
    second = Toy(tmp_path, losses, stop_after=0, select="best", checkpoint_every=100, keep=1)
    assert second.runner.resumed_from == 3 and float(second.state["total"]) == 6.0
    reached, chosen = second.run()
    assert reached == 8 and float(second.state["total"]) == sum(losses)
    # the evaluations of the first invocation came back with its checkpoint; step 4 scores best
    assert [e["step"] for e in second.runner.evaluations] == [2, 3, 4, 6, 8]
    assert chosen["step"] == 4
    with open(tmp_path / "ckpt" / "toy" / "selection.json", encoding="utf-8") as f:
        assert json.load(f)["step"] == 4
    assert 4 in second.runner.ckpt.all_steps()  # keep-best kept it past keep=1


def test_nonfinite_loss_stops_before_anything_is_saved_after_it(tmp_path):
    losses = [1.0, 1.0, 1.0, float("nan"), 1.0, 1.0]
    toy = Toy(tmp_path, losses, checkpoint_every=3)
    with pytest.raises(NonFiniteLossError, match="step 4"):
        toy.run(every_eval=100)
    assert toy.runner.ckpt.all_steps() == [3]  # not step 4 (its loss is NaN) nor anything later
    # checked one step late: step 4's metrics were fetched while step 5 had been dispatched
    assert toy.fetched[-1] == (4, 5)


def test_signal_checkpoints_the_current_step_and_raises(tmp_path):
    losses = [1.0] * 10
    toy = Toy(tmp_path, losses, checkpoint_every=100)
    sent = []

    def evaluate(done):
        if done == 3 and not sent:
            sent.append(done)
            os.kill(os.getpid(), signal.SIGTERM)  # arrives between steps 3 and 4

    toy.evaluate = evaluate
    with pytest.raises(TrainingInterrupted) as err:
        toy.run(every_eval=1)
    assert err.value.step == 3 and err.value.exit_code == 128 + signal.SIGTERM
    assert toy.runner.ckpt.all_steps() == [3]
    resumed = Toy(tmp_path, losses, checkpoint_every=100)
    assert resumed.runner.resumed_from == 3 and resumed.run(every_eval=100)[0] == 10
    assert float(resumed.state["total"]) == 10.0


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys):
    losses = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    first = Toy(tmp_path, losses, stop_after=4, checkpoint_every=2, keep=3)
    assert first.run(every_eval=100)[0] == 4  # the time box
    ckpt = tmp_path / "ckpt" / "toy"
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [2, 4]
    damaged = [p for p in (ckpt / "4").rglob("*") if p.is_file() and p.stat().st_size > 0]
    for p in damaged:  # a disk or copy fault: every file of step 4 garbled
        p.write_bytes(b"\x00garbage" * 3)
    again = Toy(tmp_path, losses, checkpoint_every=2, keep=3)
    err = capsys.readouterr().err
    assert again.runner.resumed_from == 2
    assert f"{ckpt}: checkpoint step 4 is damaged (" in err and "resuming from step 2, the newest intact one" in err
    assert float(again.state["total"]) == 1.0 + 2.0  # step 2's state
    assert (tmp_path / "ckpt" / "toy.damaged" / "4").is_dir() and not (ckpt / "4").exists()
    reached, _ = again.run(every_eval=100)
    assert reached == 6 and float(again.state["total"]) == sum(losses)

    for step in (2, 4, 6):  # nothing intact: the error names every checkpoint
        for p in (ckpt / str(step)).rglob("*") if (ckpt / str(step)).exists() else []:
            if p.is_file() and p.stat().st_size > 0:
                p.write_bytes(b"\x00garbage")
    from ee_jax.files import CorruptFileError

    with pytest.raises(CorruptFileError, match=r"no checkpoint can be restored \(step 6: .*step 4: .*\); delete"):
        Toy(tmp_path, losses, checkpoint_every=2, keep=3)
