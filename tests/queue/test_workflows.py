"""Chains and batches (``tourno.queue.workflows``) on every driver.

The process tests run real ``tourno work`` processes (a chain across two
workers; a 500-job batch across four, with one worker killed mid-batch);
the others run the worker in this process (``run_worker``), which is the
same loop. What the jobs did is read from ``test_runs`` (its serial id
orders the runs) and from the ``job_batches`` row.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import run_worker
from tests.queue import test_queue_contract as contract
from tests.queue.test_worker_processes import wait_for
from tests.support.jobs_flow import FlowAdd, FlowCallback, FlowCancel, FlowFail, FlowFlaky, FlowStep
from tourno import db as tdb
from tourno.queue import PendingJob, batch, chain, dispatch_many, failed, workflows
from tourno.queue.models import JobBatchRecord

driver = contract.driver
procs = contract.procs


def run_ids(driver, prefix: str) -> dict[str, list[int]]:
    """key -> the test_runs ids of its runs, for keys starting with ``prefix``."""
    out: dict[str, list[int]] = {}
    for key, run_id in driver.qdb.rows(
        "SELECT key, id FROM test_runs WHERE key LIKE %s ORDER BY id", (prefix + "%",)
    ):
        out.setdefault(key, []).append(run_id)
    return out


def keys_in_order(driver, prefix: str) -> list[str]:
    return [
        r[0]
        for r in driver.qdb.rows("SELECT key FROM test_runs WHERE key LIKE %s ORDER BY id", (prefix + "%",))
    ]


# -- chains ----------------------------------------------------------------------------------------


def test_chain_runs_in_order_across_two_workers_and_a_failure_runs_catch(driver, procs):
    workers = contract.start_workers(driver, procs, "--tries", "1", n=2)
    # Each link sleeps a little, so that the two workers take turns.
    chain([FlowStep(key=f"ok{i}", sleep=0.2) for i in range(3)]).dispatch()
    chain([FlowStep(key="bad0"), FlowFail(key="bad1"), FlowStep(key="bad2")]).catch(
        FlowStep(key="bad-caught")
    ).dispatch()
    wait_for(
        lambda: (
            driver.qdb.scalar("SELECT count(*) FROM test_runs WHERE key IN ('ok2', 'bad-caught')") == 2
            and driver.size() == 0
        ),
        "both chains to end",
        procs,
        timeout=60,
        alive=tuple(workers),
    )
    for w in workers:
        assert contract.stop(procs, w) == 0
    assert keys_in_order(driver, "ok") == ["ok0", "ok1", "ok2"]
    # The failed link stopped the chain: the rest never ran, catch ran once.
    assert keys_in_order(driver, "bad") == ["bad0", "bad1", "bad-caught"]
    assert [f[1] for f in driver.failed()] == ["default"]
    pids = {r[0] for r in driver.qdb.rows("SELECT DISTINCT pid FROM test_runs")}
    assert pids <= {w.pid for w in workers}


def test_a_chain_dispatched_in_a_rolled_back_transaction_never_runs(driver):
    with tdb.database.atomic() as txn:
        chain([FlowStep(key="rb0"), FlowStep(key="rb1")]).dispatch()
        batch([FlowStep(key="rb-b")]).then(FlowStep(key="rb-then")).dispatch()
        txn.rollback()
    with tdb.database.atomic():
        chain([FlowStep(key="c0"), FlowStep(key="c1")]).dispatch(queue="default")
    code, _ = run_worker()
    assert code == 0
    assert keys_in_order(driver, "rb") == []
    assert JobBatchRecord.select().count() == 0
    assert keys_in_order(driver, "c") == ["c0", "c1"]
    assert driver.size() == 0


def test_a_link_retried_by_its_own_tries_carries_the_chain_on(driver):
    chain([FlowStep(key="t0"), FlowFlaky(key="t1"), FlowStep(key="t2")]).catch(
        FlowStep(key="t-caught")
    ).dispatch()
    code, _ = run_worker(tries=1)
    assert code == 0
    assert keys_in_order(driver, "t") == ["t0", "t1", "t1", "t2"]
    assert driver.failed() == [] and driver.size() == 0


def test_a_chain_needs_jobs():
    with pytest.raises(workflows.WorkflowError):
        chain([])
    with pytest.raises(workflows.WorkflowError):
        chain([FlowStep(key="x"), "not a job"])  # type: ignore[list-item]


def test_a_damaged_chain_payload_is_logged_and_the_worker_keeps_serving(driver, caplog):
    first = FlowStep(key="damaged").pending()
    payload = {**first.payload, workflows.CHAIN: 5}
    dispatch_many([PendingJob.from_payload("default", payload), FlowStep(key="after")])
    code, worker = run_worker()
    assert code == 0
    assert keys_in_order(driver, "") == ["damaged", "after"]
    assert driver.size() == 0 and driver.failed() == []
    assert "its chain or batch step failed" in caplog.text


# -- batches: callbacks ---------------------------------------------------------------------------------


def test_batch_then_and_finally_run_once_after_every_job(driver):
    b = (
        batch([FlowStep(key=f"j{i}") for i in range(20)], name="twenty")
        .then(FlowCallback(key="then"))
        .catch(FlowCallback(key="catch"))
        .finally_(FlowCallback(key="finally"))
        .dispatch()
    )
    assert (b.total, b.pending, b.name, b.finished) == (20, 20, "twenty", False)
    code, _ = run_worker()
    assert code == 0
    b = b.fresh()
    assert (b.total, b.pending, b.processed, b.failed) == (20, 0, 20, 0)
    assert b.finished and b.finished_at is not None and not b.cancelled
    runs = run_ids(driver, "")
    assert "catch" not in runs and len(runs["then"]) == 1 and len(runs["finally"]) == 1
    last_job = max(max(v) for k, v in runs.items() if k.startswith("j"))
    assert runs["then"][0] > last_job and runs["finally"][0] > last_job
    # A callback sees its batch, finished.
    assert driver.marked("seen:then").split()[:4] == [b.id, "0", "20", "0"]


def test_a_failure_cancels_the_batch_and_runs_catch_once(driver):
    jobs = [FlowFail(key="f0"), FlowFail(key="f1")] + [FlowStep(key=f"s{i}") for i in range(5)]
    b = (
        batch(jobs)
        .then(FlowStep(key="then"))
        .catch(FlowStep(key="catch"))
        .finally_(FlowStep(key="fin"))
        .dispatch()
    )
    code, _ = run_worker(tries=1)
    assert code == 0
    b = b.fresh()
    assert b.cancelled and b.finished
    # The first failure cancelled it: the second failing job was skipped, as were the others.
    assert (b.failed, b.processed, b.pending) == (1, 6, 0)
    runs = run_ids(driver, "")
    assert sorted(runs) == ["catch", "f0", "fin"]
    assert len(runs["catch"]) == 1 and len(runs["fin"]) == 1 and "then" not in runs


def test_allow_failures_runs_every_job_then_catch_and_finally_not_then(driver):
    jobs = [FlowFail(key="f0"), FlowStep(key="s0"), FlowFail(key="f1"), FlowStep(key="s1")]
    b = (
        batch(jobs)
        .then(FlowStep(key="then"))
        .catch(FlowStep(key="catch"))
        .finally_(FlowStep(key="fin"))
        .allow_failures()
        .dispatch()
    )
    code, _ = run_worker(tries=1)
    assert code == 0
    b = b.fresh()
    assert (b.failed, b.processed, b.pending, b.cancelled) == (2, 2, 0, False)
    runs = run_ids(driver, "")
    assert sorted(runs) == ["catch", "f0", "f1", "fin", "s0", "s1"]
    assert all(len(v) == 1 for v in runs.values())
    # catch at the first failure, finally after the last job.
    assert runs["f0"][0] < runs["catch"][0]
    assert runs["fin"][0] > max(v[0] for k, v in runs.items() if k != "fin" and k != "catch")
    assert len(driver.failed()) == 2


def test_cancel_skips_the_jobs_not_started_and_jobs_can_be_added(driver):
    b = batch([FlowAdd(key="add", n=2), FlowStep(key="s0")]).finally_(FlowCallback(key="fin")).dispatch()
    code, _ = run_worker()
    assert code == 0
    b = b.fresh()
    assert (b.total, b.processed, b.pending) == (4, 4, 0)
    assert sorted(run_ids(driver, "add")) == ["add", "add-added0", "add-added1"]

    c = (
        batch([FlowCancel(key="cancel")] + [FlowStep(key=f"x{i}") for i in range(4)])
        .then(FlowStep(key="c-then"))
        .finally_(FlowStep(key="c-fin"))
        .dispatch()
    )
    code, _ = run_worker()
    assert code == 0
    c = c.fresh()
    assert c.cancelled and c.finished and (c.processed, c.failed) == (5, 0)
    runs = run_ids(driver, "")
    assert not any(k.startswith("x") for k in runs), runs  # skipped, never run
    assert "c-then" not in runs and len(runs["c-fin"]) == 1
    with pytest.raises(workflows.WorkflowError):
        c.add([FlowStep(key="late")])


def test_retrying_a_failed_batch_job_updates_the_batch(driver):
    b = (
        batch([FlowFail(key="flaky", fail_times=1), FlowStep(key="s0")])
        .then(FlowStep(key="then"))
        .finally_(FlowStep(key="fin"))
        .allow_failures()
        .dispatch()
    )
    run_worker(tries=1)
    b = b.fresh()
    assert (b.pending, b.failed, b.processed) == (0, 1, 1)
    assert "then" not in run_ids(driver, "") and len(run_ids(driver, "fin")["fin"]) == 1

    result = failed.retry_all()
    assert len(result.retried) == 1
    b = b.fresh()
    assert (b.pending, b.failed, b.processed) == (1, 0, 1)
    run_worker(tries=1)
    b = b.fresh()
    assert (b.pending, b.failed, b.processed) == (0, 0, 2)
    runs = run_ids(driver, "")
    # Every job has now succeeded: then runs; finally already ran, once.
    assert len(runs["then"]) == 1 and len(runs["fin"]) == 1 and len(runs["flaky"]) == 2


def test_an_empty_batch_is_done_at_once(driver):
    b = batch([]).then(FlowStep(key="then")).finally_(FlowStep(key="fin")).dispatch()
    assert b.finished and b.finished_at is not None
    run_worker()
    assert sorted(run_ids(driver, "")) == ["fin", "then"]


def test_a_batch_step_taken_before_a_crash_is_not_taken_again(driver):
    """Redis: the step commits before the job leaves Redis. A worker killed
    in between leaves the job to be rescued and run again; its step must
    not count twice. (The database drivers take both in one transaction.)"""
    if driver.kind != "redis":
        pytest.skip("the database drivers delete the job in the step's transaction")
    b = batch([FlowStep(key="once")]).then(FlowStep(key="then")).dispatch()
    backend = driver.backend
    dead, _ = backend.register_worker("dead", "host", 1, ["default"])
    (claimed,) = backend.claim(dead, "default", 1, [], 60)
    with tdb.write_transaction():
        workflows.after_success(json.loads(claimed.payload))()
    # The worker "died" here; the job goes back and runs again.
    backend.unregister_worker(dead)
    assert backend.rescue(0.0) != []
    run_worker()
    b = b.fresh()
    assert (b.processed, b.pending, b.failed) == (1, 0, 0)
    assert len(run_ids(driver, "then")["then"]) == 1
    assert driver.size() == 0


# -- the 500-job batch on four worker processes ---------------------------------------------------------


@pytest.mark.parametrize("kill", [False, True], ids=["clean", "sigkill"])
def test_batch_of_500_on_four_workers_runs_then_once_after_the_last_job(driver, procs, kill):
    n = 500
    workers = contract.start_workers(driver, procs, "--tries", "3", n=4)
    # One job hangs on its first run: its worker is killed (sigkill) and the
    # job is rescued and run again, to be counted once.
    jobs = [FlowStep(key=f"b{i:03d}") for i in range(n - 1)]
    jobs.insert(n // 2, FlowStep(key="hang", sleep=60 if kill else 0))
    b = batch(jobs, name="big").then(FlowStep(key="then")).finally_(FlowStep(key="fin")).dispatch()
    alive = list(workers)
    if kill:
        wait_for(lambda: run_ids(driver, "hang"), "the hanging job to start", procs, timeout=60)
        (pid,) = driver.run_pids("hang")
        victim = next(w for w in workers if w.pid == pid)
        victim.send_signal(signal.SIGKILL)
        assert procs.wait_exit(victim, 10) == -signal.SIGKILL
        alive.remove(victim)
    wait_for(
        lambda: (
            driver.qdb.scalar("SELECT count(*) FROM test_runs WHERE key = 'fin'") >= 1 and driver.size() == 0
        ),
        "the batch to finish",
        procs,
        timeout=90,
        alive=tuple(alive),
    )
    for w in alive:
        assert contract.stop(procs, w) == 0
    b = b.fresh()
    assert (b.total, b.pending, b.processed, b.failed) == (n, 0, n, 0)
    runs = run_ids(driver, "")
    assert len(runs["then"]) == 1 and len(runs["fin"]) == 1
    assert len(runs["hang"]) == (2 if kill else 1)
    members = [i for k, v in runs.items() if k not in ("then", "fin") for i in v]
    assert len({k for k in runs if k not in ("then", "fin")}) == n
    assert runs["then"][0] > max(members)
    if driver.kind != "sqlite":  # SQLite's CURRENT_TIMESTAMP has whole seconds
        (late,) = driver.qdb.rows("SELECT max(at) FROM test_runs WHERE key NOT IN ('then', 'fin')")
        then_at = driver.qdb.scalar("SELECT at FROM test_runs WHERE key = 'then'")
        assert then_at >= late[0]
    if not kill:
        assert len({r[0] for r in driver.qdb.rows("SELECT DISTINCT pid FROM test_runs")}) >= 2


# -- the CLI ---------------------------------------------------------------------------------------------


def test_cli_lists_shows_and_prunes_batches(driver):
    b = batch([FlowStep(key="one")], name="nightly").dispatch()
    run_worker()
    out = driver.cli("queue", "batches")
    assert out.returncode == 0, out.stderr
    assert b.id in out.stdout and "nightly" in out.stdout
    out = driver.cli("queue", "batches", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["id"], r["total"], r["processed"], r["pending"]) for r in rows] == [(b.id, 1, 1, 0)]
    out = driver.cli("queue", "batch", b.id)
    assert out.returncode == 0 and "nightly" in out.stdout and "100%" in out.stdout
    out = driver.cli("queue", "batch", "no-such-batch")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "no-such-batch" in out.stderr
    out = driver.cli("queue", "prune-batches", "--hours", "1", "--force")
    assert out.returncode == 0 and "Pruned 0" in out.stdout
    out = driver.cli("queue", "prune-batches", "--hours", "0", "--force")
    assert out.returncode == 0 and "Pruned 1" in out.stdout
    assert JobBatchRecord.select().count() == 0
    out = driver.cli("queue", "prune-batches", "--hours", "-1", "--force")
    assert out.returncode == 2
