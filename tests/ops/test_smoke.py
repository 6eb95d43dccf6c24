from tests.support.jobs import Noop


def test_dispatch_and_claim(qdb):
    ids = [Noop(n=i).dispatch() for i in range(3)]
    assert all(ids)
    assert qdb.scalar("SELECT count(*) FROM jobs") == 3


def test_worker_runs_jobs(qdb):
    from tests.conftest import run_worker
    from tests.support.jobs import RecordRun

    for i in range(25):
        RecordRun(key=f"k{i}").dispatch()
    code, worker = run_worker()
    assert code == 0
    assert worker.jobs_processed == 25
    assert qdb.scalar("SELECT count(*) FROM test_runs") == 25
    assert qdb.scalar("SELECT count(*) FROM jobs") == 0
