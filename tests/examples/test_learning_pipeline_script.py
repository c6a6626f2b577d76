"""The stage runner of examples/embodiment/run_learning_pipeline.sh: names checked up front, joined stages at once.

The stages' programs are replaced by a recorder (PYTHON=...) that notes when each started and ended: what is
tested is the script's own control flow; the programs themselves have their own tests.
"""

import os
import stat
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment", "run_learning_pipeline.sh")

RECORDER = """#!/usr/bin/env bash
name="$(basename "$1")"
echo "$name start $(date +%s.%N)" >> "$RECORD"
echo "$name $*" >> "$RECORD.args"
sleep 1
echo "$name end $(date +%s.%N)" >> "$RECORD"
[ "$name" != "$FAIL" ]
"""


def _run(tmp_path, *stages, fail="", **env_vars):
    recorder = tmp_path / "python"
    recorder.write_text(RECORDER)
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PYTHON=str(recorder), RECORD=str(tmp_path / "record"), FAIL=fail,
               WORK=str(tmp_path / "work"), NUM_WORKERS="1", **env_vars)
    proc = subprocess.run(["bash", SCRIPT, *stages], env=env, capture_output=True, text=True, timeout=60)
    record = (tmp_path / "record").read_text().split("\n") if (tmp_path / "record").exists() else []
    times = {}
    for line in filter(None, record):
        name, what, t = line.split()
        times[(name, what)] = float(t)
    return proc, times


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_an_unknown_stage_is_refused_before_any_stage_runs(tmp_path):
    proc, times = _run(tmp_path, "demos", "eval_sft+pp0")
    assert proc.returncode == 2
    assert "unknown stage pp0" in proc.stderr
    assert times == {}, "demos ran although a later stage name was wrong"


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_joined_stages_run_at_once_and_plain_ones_in_order(tmp_path):
    proc, t = _run(tmp_path, "demos", "eval_sft+ppo")
    assert proc.returncode == 0, proc.stderr
    assert t[("collect_demos.py", "end")] <= t[("evaluate.py", "start")]
    assert t[("collect_demos.py", "end")] <= t[("train_embodied_agent.py", "start")]
    # each sleeps 1 s: at once, each starts before the other ends
    assert t[("evaluate.py", "start")] < t[("train_embodied_agent.py", "end")]
    assert t[("train_embodied_agent.py", "start")] < t[("evaluate.py", "end")]
    assert "[eval_sft] === eval_sft" in proc.stdout and "[ppo] === ppo" in proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_a_failing_joined_stage_fails_the_pipeline_after_the_other_finishes(tmp_path):
    proc, t = _run(tmp_path, "eval_sft+ppo", "curves", fail="evaluate.py")
    assert proc.returncode == 1
    assert "stage eval_sft+ppo failed" in proc.stderr
    assert ("train_embodied_agent.py", "end") in t, "the other stage was cut short"
    assert ("plot_curves.py", "start") not in t, "the pipeline went on after a failed stage"


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_rl_tasks_narrow_what_rl_trains_on_while_the_evaluation_keeps_every_task(tmp_path):
    proc, _ = _run(tmp_path, "eval_sft+ppo", TASKS="pick_and_place,open_drawer", RL_TASKS="pick_and_place")
    assert proc.returncode == 0, proc.stderr
    args = dict(line.split(" ", 1) for line in (tmp_path / "record.args").read_text().splitlines())
    assert "env.train.tasks=[pick_and_place] " in args["train_embodied_agent.py"] + " "
    assert "tasks=[pick_and_place,open_drawer]" in args["evaluate.py"]
