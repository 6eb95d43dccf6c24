"""The ``tourno`` command: help, failed-job tooling, queue operations,
configuration and errors, asserted on the text an operator sees.

Most tests run the CLI in process with click's ``CliRunner`` (settings come
from the ``env`` given to ``invoke``); one runs it as a real subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tests.conftest import run_worker, tourno_cmd
from tests.support.jobs import Boom, Noop
from tourno import db as tdb
from tourno import migrations
from tourno.cli import main
from tourno.config import Settings
from tourno.queue import Job, backends
from tourno.queue.models import FailedJobRecord, JobRecord, QueueSignal, WorkerRecord

# Every migration file, in order (the CLI lists them by name).
MIGRATIONS = sorted(p.stem for p in Path(migrations.DIRECTORY).glob("[0-9][0-9][0-9][0-9]_*.py"))

#: Wide enough that rich never wraps a table cell.
WIDE = "200"


# Jobs of this module; names start with "Cli" so they never collide in the registry.


@dataclass
class CliUrgentBoom(Job):
    """A high-priority unique job that always fails."""

    priority = -5
    unique_for = 3600

    key: str

    def unique_key(self) -> str:
        return self.key

    def handle(self) -> None:
        raise ValueError(f"urgent boom {self.key}")


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI installs a stderr handler on the root logger (bound to the
    runner's captured stream) and sets levels; undo that after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    peewee_level = logging.getLogger("peewee").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("peewee").setLevel(peewee_level)


def invoke(*args: str, **env: str | None) -> Result:
    """Run ``tourno ARGS`` in process with only the given TOURNO_* settings."""
    full_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TOURNO_")}
    full_env.update(COLUMNS=WIDE, FORCE_COLOR=None)
    full_env.update(env)
    return CliRunner().invoke(main, list(args), env=full_env, prog_name="tourno")


@pytest.fixture
def cli(qdb):
    """``cli("queue", "failed")`` on the test database.

    The CLI binds tourno's database proxy to a database object of its own and
    opens a connection on it; the test goes on with that one (re-opened if the
    command closed it)."""

    def run(*args: str, **env: str | None) -> Result:
        tdb.database.close()
        result = invoke(*args, TOURNO_DATABASE_URL=qdb.url, TOURNO_IMPORTS="tests.support.jobs", **env)
        tdb.open_connection()
        return result

    return run


def table_rows(output: str) -> list[list[str]]:
    """The data rows of the rich tables in ``output``, as lists of cells."""
    return [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def table_header(output: str) -> list[str]:
    (line,) = [ln for ln in output.splitlines() if ln.startswith("┃")]
    return [c.strip() for c in line.strip().strip("┃").split("┃")]


def fail_jobs(by_queue: dict[str, list[str]]) -> dict[str, int]:
    """Dispatch one Boom job per key and let a worker fail them (one try);
    returns key -> failed_jobs id."""
    for queue, keys in by_queue.items():
        for key in keys:
            Boom(key=key).dispatch(queue=queue)
    code, worker = run_worker(tries=1, queues=list(by_queue))
    assert code == 0
    assert worker.jobs_processed == sum(len(k) for k in by_queue.values())
    ids = {}
    for rec in FailedJobRecord.select():
        ids[json.loads(rec.payload)["args"]["key"]] = rec.id
    assert len(ids) == worker.jobs_processed
    # The exited worker's row can linger (see test_an_exited_worker_is_not_shown_as_live).
    WorkerRecord.delete().execute()
    return ids


def failed_ids() -> set[int]:
    return {r.id for r in FailedJobRecord.select(FailedJobRecord.id)}


def backdate(failed_id: int, hours: float) -> None:
    when = tdb.utcnow() - dt.timedelta(hours=hours)
    assert FailedJobRecord.update(failed_at=when).where(FailedJobRecord.id == failed_id).execute() == 1


def reserve_one(queue: str) -> tuple[int, int]:
    """Claim one ready job of ``queue`` as a (registered, live) worker would."""
    backend = backends.current()
    worker_id, _ = backend.register_worker("cli-test", "testhost", 4242, [queue])
    (job,) = backend.claim(worker_id, queue, 1, [], 60.0)
    return worker_id, job.id


# -- help ---------------------------------------------------------------------------


def _walk(cmd: click.Command, path: tuple[str, ...] = ()):
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, name), (*path, name))


COMMANDS = list(_walk(main))


def test_the_walk_finds_every_command():
    names = {" ".join(path) for path, _ in COMMANDS}
    expected = {
        "",
        "config",
        "work",
        "db",
        "db migrate",
        "db status",
        "queue",
        "queue failed",
        "queue retry",
        "queue forget",
        "queue flush",
        "queue prune-failed",
        "queue clear",
        "queue status",
        "queue size",
        "queue monitor",
        "queue restart",
        "queue dispatch",
        "queue cancel",
        "queue pause",
        "queue resume",
        "queue show",
    }
    assert expected <= names


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) or "tourno" for p, _ in COMMANDS])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_needs_no_database(path, cmd, flag):
    bound = tdb.database.obj
    # An unreachable server: any attempt to connect would fail the command.
    result = invoke(*path, flag, TOURNO_DATABASE_URL="postgresql://nobody:pw@127.0.0.1:1/nowhere")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(" ".join(["Usage: tourno", *path]).rstrip())
    description = " ".join((cmd.help or "").split("\n\n")[0].split())
    assert description, f"{' '.join(path)} has no description"
    assert description in " ".join(result.stdout.split())
    assert "Options:" in result.stdout
    # No command body ran: the database proxy was not even re-bound.
    assert tdb.database.obj is bound


GROUPS = [(path, cmd) for path, cmd in COMMANDS if isinstance(cmd, click.Group)]


@pytest.mark.parametrize(("path", "group"), GROUPS, ids=[" ".join(p) or "tourno" for p, _ in GROUPS])
def test_every_command_has_a_short_help_that_fits_a_command_list(path, group):
    # click lists commands in 80 columns at most: 6 for the indents, the
    # longest name, and the rest for the help; a longer first sentence is cut
    # with "...", and "e.g." is taken for a sentence's end.
    ctx = click.Context(group)
    names = group.list_commands(ctx)
    limit = 80 - 6 - max(len(n) for n in names)
    for name in names:
        short = group.get_command(ctx, name).get_short_help_str(limit=limit)
        assert short, f"{' '.join((*path, name))} has no short help"
        assert not short.endswith("..."), (name, short)
        assert not short.endswith(("e.g.", "i.e.")), (name, short)


def test_group_listings_at_80_columns_cut_nothing():
    for path, cmd in COMMANDS:
        if not isinstance(cmd, click.Group):
            continue
        result = invoke(*path, "--help", COLUMNS="80")
        listed = result.stdout.split("Commands:", 1)[1].splitlines()
        for line in listed:
            assert not line.rstrip().endswith(("...", "e.g.", "(e.g.")), (path, line)


def test_shell_completion_as_the_readme_gives_it():
    script = invoke(_TOURNO_COMPLETE="bash_source")
    assert script.exit_code == 0, script.output
    assert "_tourno_completion" in script.stdout
    words = invoke(_TOURNO_COMPLETE="bash_complete", COMP_WORDS="tourno queue sh", COMP_CWORD="2")
    assert words.exit_code == 0, words.output
    assert "plain,show" in words.stdout.splitlines()
    assert "_TOURNO_COMPLETE=bash_source tourno" in (Path(__file__).parents[2] / "README.md").read_text()


def test_version():
    import tourno

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"tourno, version {tourno.__version__}"


# -- failed jobs ----------------------------------------------------------------------


def test_commands_on_an_empty_queue(qdb, cli):
    failed = cli("queue", "failed")
    assert failed.exit_code == 0, failed.output
    assert failed.stdout.strip() == "No failed jobs."
    assert cli("queue", "failed", "--json").stdout == ""

    retry = cli("queue", "retry", "all")
    assert retry.exit_code == 0, retry.output
    assert retry.stdout.strip() == "No failed jobs to retry."

    status = cli("queue", "status")
    assert status.exit_code == 0, status.output
    assert table_rows(status.stdout) == [["(empty)", "0", "0", "0", "-", "-"]]
    assert "No live workers." in status.stdout
    assert status.stdout.rstrip().endswith("Failed jobs: 0")
    assert json.loads(cli("queue", "status", "--json").stdout) == {
        "connection": "database",
        "queues": [],
        "paused": [],
        "workers": [],
        "failed": 0,
    }

    monitor = cli("queue", "monitor", "--max", "0")
    assert monitor.exit_code == 0, monitor.output
    assert table_rows(monitor.stdout) == []


def test_failed_lists_failures_newest_first(qdb, cli):
    ids = fail_jobs({"default": ["a", "b"], "mail": ["m"]})
    result = cli("queue", "failed")
    assert result.exit_code == 0, result.output
    assert "Failed jobs" in result.stdout
    assert table_header(result.stdout) == [
        "ID",
        "Connection",
        "Queue",
        "Job",
        "Attempts",
        "Failed at (UTC)",
        "Exception",
    ]
    rows = table_rows(result.stdout)
    assert [r[0] for r in rows] == [str(ids["m"]), str(ids["b"]), str(ids["a"])]
    for row, (queue, key) in zip(rows, [("mail", "m"), ("default", "b"), ("default", "a")], strict=True):
        assert row[1:5] == ["database", queue, "Boom", "1"]  # one try each
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[5])
        # The exception's last line, not the traceback.
        assert row[6] == f"ValueError: boom {key}"
    assert "Traceback" not in result.stdout

    only_mail = cli("queue", "failed", "--queue", "mail")
    assert [r[0] for r in table_rows(only_mail.stdout)] == [str(ids["m"])]
    newest = cli("queue", "failed", "--limit", "1")
    assert [r[0] for r in table_rows(newest.stdout)] == [str(ids["m"])]


def test_failed_json_is_one_object_per_line(qdb, cli):
    ids = fail_jobs({"default": ["a"], "mail": ["m"]})
    result = cli("queue", "failed", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    objects = [json.loads(line) for line in lines]
    records = {r.id: r for r in FailedJobRecord.select()}
    assert [o["id"] for o in objects] == [ids["m"], ids["a"]]
    for obj, key, queue in zip(objects, ["m", "a"], ["mail", "default"], strict=True):
        assert set(obj) == {"id", "uuid", "connection", "queue", "job", "attempts", "failed_at", "exception"}
        rec = records[obj["id"]]
        assert obj["uuid"] == rec.uuid == json.loads(rec.payload)["uuid"]
        assert obj["connection"] == "database"
        assert obj["queue"] == queue
        assert obj["job"] == "Boom"
        assert dt.datetime.fromisoformat(obj["failed_at"]) == rec.failed_at
        # The whole traceback, for scripts.
        assert obj["exception"].startswith("Traceback (most recent call last):")
        assert obj["exception"].endswith(f"ValueError: boom {key}")


def test_show_one_failed_job_by_id_or_uuid(qdb, cli):
    ids = fail_jobs({"mail": ["[bold]m"]})
    rec = FailedJobRecord.get_by_id(ids["[bold]m"])
    for ident in (str(rec.id), rec.uuid):
        result = cli("queue", "show", ident)
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert f"ID:         {rec.id}\n" in out
        assert f"UUID:       {rec.uuid}\n" in out
        assert "Job:        Boom\n" in out and "Queue:      mail\n" in out
        assert "Connection: database\n" in out and "Attempts:   1\n" in out
        assert f"Failed at:  {rec.failed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" in out
        # The payload, as JSON, and the whole traceback (rich markup left alone).
        payload = out.split("Payload:\n", 1)[1].split("\nException:\n", 1)[0]
        assert json.loads(payload) == json.loads(rec.payload)
        exception = out.split("\nException:\n", 1)[1].split("\n\nRetry it with:", 1)[0]
        assert exception == rec.exception.rstrip()
        assert exception.startswith("Traceback") and "ValueError: boom [bold]m" in exception
        assert f"tourno queue retry {rec.id}" in out
    as_json = cli("queue", "show", rec.uuid, "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["payload"] == json.loads(rec.payload)
    assert data["exception"] == rec.exception
    assert (data["id"], data["queue"], data["job"], data["attempts"]) == (rec.id, "mail", "Boom", 1)

    missing = cli("queue", "show", "999999")
    assert missing.exit_code == 1
    (line,) = missing.stderr.splitlines()
    assert line == "error: no failed job matches 999999 (see `tourno queue failed`)"
    listed = cli("queue", "failed")
    assert "tourno queue show ID" in listed.stdout


def test_unreadable_payload_is_listed_but_not_retried(qdb, cli):
    rec = FailedJobRecord.create(
        uuid="00000000-0000-0000-0000-000000000001",
        connection="database",
        queue="default",
        payload="{not json",
        exception="InvalidPayload: payload is not valid JSON",
        failed_at=tdb.utcnow(),
    )
    listed = cli("queue", "failed")
    assert table_rows(listed.stdout)[0][:4] == [str(rec.id), "database", "default", "?"]
    result = cli("queue", "retry", str(rec.id))
    assert result.exit_code == 1
    assert f"Cannot retry failed job {rec.id}: payload is not a JSON object" in result.stdout
    assert "forget it instead" in result.stdout
    assert failed_ids() == {rec.id}
    assert JobRecord.select().count() == 0
    # show prints such a payload as the text it is.
    shown = cli("queue", "show", str(rec.id))
    assert shown.exit_code == 0, shown.output
    assert "Payload:\n{not json\n" in shown.stdout
    assert json.loads(cli("queue", "show", str(rec.id), "--json").stdout)["payload"] == "{not json"


def test_retry_one_keeps_the_uuid_and_resets_attempts(qdb, cli):
    ids = fail_jobs({"default": ["a", "b"]})
    before = FailedJobRecord.get_by_id(ids["a"])
    uuid = before.uuid
    result = cli("queue", "retry", str(ids["a"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Pushed 1 failed job(s) back onto the queue."
    assert failed_ids() == {ids["b"]}
    (job,) = JobRecord.select()
    assert job.queue == "default"
    assert job.attempts == 0
    assert job.reserved_at is None
    assert job.payload["uuid"] == uuid
    assert job.payload["job"] == "Boom"
    assert job.payload["args"] == {"key": "a"}

    # It runs again, fails again, and is filed under the same uuid.
    run_worker(tries=1)
    again = FailedJobRecord.get(FailedJobRecord.uuid == uuid)
    assert again.failed_at >= before.failed_at
    assert FailedJobRecord.select().count() == 2
    assert qdb.scalar("SELECT count(*) FROM test_runs WHERE key = 'a'") == 2


def test_retry_keeps_the_job_priority(qdb, cli):
    CliUrgentBoom(key="p").dispatch()
    assert JobRecord.get().priority == -5
    run_worker(tries=1)
    assert FailedJobRecord.select().count() == 1
    result = cli("queue", "retry", "all")
    assert result.exit_code == 0, result.output
    (job,) = JobRecord.select()
    assert job.priority == -5


def test_retried_unique_job_stays_unique(qdb, cli):
    CliUrgentBoom(key="u").dispatch()
    assert CliUrgentBoom(key="u").dispatch() is None  # unique while pending
    run_worker(tries=1)
    result = cli("queue", "retry", "all")
    assert result.exit_code == 0, result.output
    assert JobRecord.select().count() == 1
    assert CliUrgentBoom(key="u").dispatch() is None
    assert JobRecord.select().count() == 1


def test_retry_by_ids_and_uuids(qdb, cli):
    ids = fail_jobs({"default": ["a", "b", "c", "d"]})
    uuid_b = FailedJobRecord.get_by_id(ids["b"]).uuid

    both = cli("queue", "retry", str(ids["a"]), uuid_b, str(ids["a"]))
    assert both.exit_code == 0, both.output
    assert both.stdout.strip() == "Pushed 2 failed job(s) back onto the queue."
    assert failed_ids() == {ids["c"], ids["d"]}
    assert sorted(j.payload["args"]["key"] for j in JobRecord.select()) == ["a", "b"]

    unknown = cli("queue", "retry", "999999")
    assert unknown.exit_code == 1
    assert unknown.stdout.splitlines() == [
        "No failed job matches 999999.",
        "Pushed 0 failed job(s) back onto the queue.",
    ]
    assert failed_ids() == {ids["c"], ids["d"]}

    # Known ids are still retried; the unknown one still fails the command.
    mixed = cli("queue", "retry", str(ids["c"]), "nope")
    assert mixed.exit_code == 1
    assert "No failed job matches nope." in mixed.stdout
    assert "Pushed 1 failed job(s)" in mixed.stdout
    assert failed_ids() == {ids["d"]}

    for args, message in [
        (["all", str(ids["d"])], "error: `all` cannot be combined with IDs"),
        ([str(ids["d"]), "--queue", "default"], "error: --queue only applies to `retry all`"),
    ]:
        usage = cli("queue", "retry", *args)
        assert usage.exit_code == 2, args
        assert usage.stderr.strip() == message
    assert failed_ids() == {ids["d"]}
    assert JobRecord.select().count() == 3


def test_retry_needs_an_argument():
    result = invoke("queue", "retry")
    assert result.exit_code == 2
    assert "Missing argument 'IDS...'" in result.stderr


def test_retry_all_of_one_queue_then_all(qdb, cli):
    ids = fail_jobs({"default": ["a", "b"], "mail": ["m"]})
    uuids = {r.uuid for r in FailedJobRecord.select()}

    mail = cli("queue", "retry", "all", "--queue", "mail")
    assert mail.exit_code == 0, mail.output
    assert "Pushed 1 failed job(s) back onto the queue." in mail.stdout
    assert failed_ids() == {ids["a"], ids["b"]}
    (job,) = JobRecord.select()
    assert (job.queue, job.payload["args"]["key"]) == ("mail", "m")

    rest = cli("queue", "retry", "all")
    assert rest.exit_code == 0, rest.output
    assert "Pushed 2 failed job(s) back onto the queue." in rest.stdout
    assert failed_ids() == set()
    jobs = list(JobRecord.select())
    assert {j.payload["uuid"] for j in jobs} == uuids
    assert all(j.attempts == 0 and j.reserved_at is None for j in jobs)
    assert sorted((j.queue, j.payload["args"]["key"]) for j in jobs) == [
        ("default", "a"),
        ("default", "b"),
        ("mail", "m"),
    ]


def test_forget(qdb, cli):
    ids = fail_jobs({"default": ["a", "b", "c"]})
    result = cli("queue", "forget", str(ids["a"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Failed job {ids['a']} deleted."
    assert failed_ids() == {ids["b"], ids["c"]}

    uuid_b = FailedJobRecord.get_by_id(ids["b"]).uuid
    by_uuid = cli("queue", "forget", uuid_b)
    assert by_uuid.exit_code == 0, by_uuid.output
    assert failed_ids() == {ids["c"]}

    for ident in ["nope", "999999", str(ids["a"])]:
        unknown = cli("queue", "forget", ident)
        assert unknown.exit_code == 1, ident
        assert unknown.stderr.strip() == f"error: no failed job matches {ident}"
    assert failed_ids() == {ids["c"]}
    assert JobRecord.select().count() == 0  # forgotten, not retried


def test_prune_and_flush(qdb, cli):
    ids = fail_jobs({"default": ["h50", "h23", "h2", "fresh"]})
    backdate(ids["h50"], 50)
    backdate(ids["h23"], 23)
    backdate(ids["h2"], 2)

    pruned = cli("queue", "prune-failed", "--hours", "24", "--force")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout.strip() == "Pruned 1 failed job(s)."
    assert failed_ids() == {ids["h23"], ids["h2"], ids["fresh"]}

    older = cli("queue", "flush", "--hours", "1", "--force")
    assert older.exit_code == 0, older.output
    assert older.stdout.strip() == "Deleted 2 failed job(s)."
    assert failed_ids() == {ids["fresh"]}

    everything = cli("queue", "flush", "--force")
    assert everything.exit_code == 0, everything.output
    assert everything.stdout.strip() == "Deleted 1 failed job(s)."
    assert failed_ids() == set()


def test_destructive_commands_refuse_without_force_or_terminal(qdb, cli):
    ids = fail_jobs({"default": ["a"]})
    Noop().dispatch()
    Noop().dispatch(queue="mail")
    for args in [
        ["queue", "flush"],
        ["queue", "flush", "--hours", "0"],
        ["queue", "prune-failed", "--hours", "0"],
        ["queue", "clear"],
        ["queue", "clear", "--queue", "default"],
    ]:
        # CliRunner's stdin is not a terminal, as under cron or a pipe: even
        # a "y" waiting on stdin is no confirmation.
        result = cli(*args, input="y\n")
        assert result.exit_code == 1, args
        assert result.stderr.strip() == "error: refusing to delete without confirmation; pass --force"
        assert failed_ids() == {ids["a"]}
        assert JobRecord.select().count() == 2


def test_force_is_not_read_from_the_environment(sqlite):
    ids = fail_jobs({"default": ["a"]})
    tdb.database.close()
    result = invoke(
        "queue",
        "flush",
        TOURNO_DATABASE_URL=sqlite.url,
        TOURNO_IMPORTS="tests.support.jobs",
        TOURNO_QUEUE_FLUSH_FORCE="1",
    )
    tdb.open_connection()
    assert result.exit_code == 1
    assert failed_ids() == set(ids.values())


# -- the queue itself ------------------------------------------------------------------


def test_status_and_size(qdb, cli):
    fail_jobs({"default": ["x"]})
    Noop(n=1).dispatch()
    Noop(n=2).dispatch()
    Noop(n=3).dispatch(delay=3600)
    Noop(n=4).dispatch(queue="mail")
    Noop(n=5).dispatch(queue="mail")
    worker_id, _ = reserve_one("mail")

    for command in ["status", "size"]:
        result = cli("queue", command, "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["connection"] == "database"
        assert data["failed"] == 1
        assert [{k: q[k] for k in ("queue", "ready", "delayed", "reserved")} for q in data["queues"]] == [
            {"queue": "default", "ready": 2, "delayed": 1, "reserved": 0},
            {"queue": "mail", "ready": 1, "delayed": 0, "reserved": 1},
        ]
        assert [q["paused_at"] for q in data["queues"]] == [None, None] and data["paused"] == []
        oldest = dt.datetime.fromisoformat(data["queues"][0]["oldest_ready_at"])
        assert 0 <= (tdb.utcnow() - oldest).total_seconds() < 60
        (worker,) = data["workers"]
        assert worker["id"] == worker_id
        assert (worker["name"], worker["hostname"], worker["pid"], worker["queues"]) == (
            "cli-test",
            "testhost",
            4242,
            "mail",
        )
        assert worker["jobs_done"] == 0

        table = cli("queue", command)
        assert table.exit_code == 0, table.output
        out = table.stdout
        assert "Queues" in out and "Workers" in out
        rows = table_rows(out)
        queue_rows = [r for r in rows if len(r) == 6]
        assert [r[:4] for r in queue_rows] == [["default", "2", "1", "0"], ["mail", "1", "0", "1"]]
        assert re.fullmatch(r"\d+s", queue_rows[0][4])
        assert [r[5] for r in queue_rows] == ["-", "-"]  # neither is paused
        (worker_row,) = [r for r in rows if len(r) == 7]
        assert worker_row[:6] == [f"cli-test#{worker_id}", "testhost", "4242", "mail", "-", "0"]
        assert re.fullmatch(r"\d+s ago", worker_row[6])
        assert out.rstrip().endswith("Failed jobs: 1")


def test_tables_are_not_cut_off_a_terminal(sqlite):
    """Piped output (cron mail, `ssh -T`) used to be cut to 80 columns:
    both workers showed as `tourno-worke…`."""
    fail_jobs({"a-very-long-queue-name-that-no-one-would-want-cut": ["x"]})
    backend = backends.current()
    long_names = [f"tourno-worker_{n:02d}-on-a-rather-long-host-name-for-this-test" for n in range(2)]
    for name in long_names:
        backend.register_worker(name, "worker-host-with-a-long-name.example.internal", 4242, ["default"])
    env = sqlite.env()
    env.pop("COLUMNS", None)
    for args in (["queue", "status"], ["queue", "failed"]):
        result = subprocess.run(tourno_cmd(*args), env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout, result.stdout
        if args == ["queue", "status"]:
            for name in long_names:
                assert name in result.stdout
        else:
            assert "a-very-long-queue-name-that-no-one-would-want-cut" in result.stdout


def test_on_a_narrow_terminal_cells_wrap_instead_of_being_cut(qdb, cli):
    backend = backends.current()
    worker_id, _ = backend.register_worker("tourno-worker_01", "host", 1, ["default"])
    result = cli("queue", "status", COLUMNS="50")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    # The worker's name is folded over lines of its cell: put it back together.
    workers_table = result.stdout.split("Workers", 1)[1]
    assert "".join(cells[0] for cells in table_rows(workers_table)) == f"tourno-worker_01#{worker_id}"


def test_an_exited_worker_is_not_shown_as_live(qdb, cli):
    import threading

    base = type(backends.current())
    in_beat, unregistered = threading.Event(), threading.Event()

    class SlowHeartbeat(base):
        """Stretches one real interleaving: the monitor thread is inside a
        heartbeat (a slow round trip) while the main thread shuts down."""

        def heartbeat(self, worker_id, info):
            in_beat.set()
            unregistered.wait(timeout=1.0)
            return super().heartbeat(worker_id, info)

        def claim(self, *args, **kwargs):
            in_beat.wait(timeout=5.0)
            return super().claim(*args, **kwargs)

        def unregister_worker(self, worker_id):
            super().unregister_worker(worker_id)
            unregistered.set()

    backends.configure(SlowHeartbeat())
    code, worker = run_worker()
    assert code == 0 and worker.stop_reason == "empty"
    assert in_beat.is_set()
    result = cli("queue", "status", "--json")
    assert json.loads(result.stdout)["workers"] == []
    assert "No live workers." in cli("queue", "status").stdout


def test_clear(qdb, cli):
    Noop(n=1).dispatch()
    Noop(n=2).dispatch()
    Noop(n=3).dispatch(delay=3600)
    Noop(n=4).dispatch(queue="mail")
    Noop(n=5).dispatch(queue="mail", delay=60)
    _, reserved_id = reserve_one("default")

    one = cli("queue", "clear", "--queue", "default", "--force")
    assert one.exit_code == 0, one.output
    assert one.stdout.strip() == "Cleared 2 job(s) from default."
    remaining = sorted(
        (j.queue, j.payload["args"]["n"], j.reserved_at is not None) for j in JobRecord.select()
    )
    # The running job finishes; the other queue is untouched.
    assert remaining == [("default", 1, True), ("mail", 4, False), ("mail", 5, False)]
    assert JobRecord.get_by_id(reserved_id).payload["args"]["n"] == 1

    every = cli("queue", "clear", "--force")
    assert every.exit_code == 0, every.output
    assert every.stdout.strip() == "Cleared 2 job(s)."
    assert [j.id for j in JobRecord.select()] == [reserved_id]


def test_monitor(qdb, cli):
    for n in range(3):
        Noop(n=n).dispatch()
    Noop(n=9).dispatch(queue="mail", delay=3600)  # delayed jobs are waiting too

    over = cli("queue", "monitor", "--max", "2")
    assert over.exit_code == 1, over.output
    assert "Queue sizes (max 2)" in over.stdout
    assert table_rows(over.stdout) == [["default", "3", "ALERT"], ["mail", "1", "OK"]]

    at_limit = cli("queue", "monitor", "--max", "3")
    assert at_limit.exit_code == 0, at_limit.output
    assert table_rows(at_limit.stdout) == [["default", "3", "OK"], ["mail", "1", "OK"]]

    chosen = cli("queue", "monitor", "--max", "0", "--queue", "mail,other", "--json")
    assert chosen.exit_code == 1
    assert json.loads(chosen.stdout) == [
        {"queue": "mail", "size": 1, "max": 0, "alert": True},
        {"queue": "other", "size": 0, "max": 0, "alert": False},
    ]
    quiet = cli("queue", "monitor", "--max", "0", "--queue", "other")
    assert quiet.exit_code == 0
    assert table_rows(quiet.stdout) == [["other", "0", "OK"]]


def test_restart_writes_the_signal(qdb, cli):
    assert QueueSignal.select().count() == 0
    result = cli("queue", "restart")
    assert result.exit_code == 0, result.output
    (signal_row,) = QueueSignal.select()
    assert signal_row.name == "restart"
    assert 0 <= (tdb.utcnow() - signal_row.value).total_seconds() < 60
    shown = signal_row.value.strftime("%Y-%m-%d %H:%M:%S")
    assert (
        result.stdout.strip() == f"Restart signal sent at {shown} UTC; workers exit after their current job."
    )

    # A second restart moves the instant forward; still one row.
    cli("queue", "restart")
    (later,) = QueueSignal.select()
    assert later.value >= signal_row.value


def test_dispatch(qdb, cli):
    result = cli("queue", "dispatch", "DemoJob", "--count", "3")
    assert result.exit_code == 0, result.output
    jobs = list(JobRecord.select().order_by(JobRecord.id))
    assert len(jobs) == 3
    assert result.stdout.strip() == f"Dispatched 3 DemoJob job(s): {', '.join(str(j.id) for j in jobs)}"
    assert {j.payload["job"] for j in jobs} == {"DemoJob"}
    assert {j.queue for j in jobs} == {"default"}
    for j in jobs:
        assert j.payload["args"] == {"message": "hello from the queue", "seconds": 0.0, "fail": False}
    assert len({j.payload["uuid"] for j in jobs}) == 3

    custom = cli(
        "queue", "dispatch", "DemoJob", "--args", '{"message": "hi"}', "--queue", "mail", "--delay", "600"
    )
    assert custom.exit_code == 0, custom.output
    (job,) = JobRecord.select().where(JobRecord.queue == "mail")
    assert job.payload["args"]["message"] == "hi"
    assert 500 < (job.available_at - tdb.utcnow()).total_seconds() <= 600


def test_dispatch_errors(qdb, cli):
    unknown = cli("queue", "dispatch", "NoSuchJob")
    assert unknown.exit_code == 2
    (line,) = unknown.stderr.splitlines()
    assert line.startswith("error: unknown job 'NoSuchJob'; registered jobs: ")
    registered = line.split("registered jobs: ", 1)[1].split(", ")
    assert {"DemoJob", "Boom", "Noop"} <= set(registered)
    assert registered == sorted(registered)

    for args in ["[1]", "not json", '{"no_such_field": 1}', '"text"']:
        bad = cli("queue", "dispatch", "DemoJob", "--args", args)
        assert bad.exit_code == 2, args
        (line,) = bad.stderr.splitlines()
        assert line.startswith("error: --args do not fit DemoJob: "), line
    assert JobRecord.select().count() == 0


@pytest.mark.parametrize(
    "options",
    [
        ["--delay", "1e30"],
        ["--delay", "nan"],
        ["--delay", "inf"],
        ["--args", '{"message": NaN}'],
        ["--args", '{"message": Infinity}'],
        ["--args", '{"message": "a\\u0000b"}'],
        ["--args", '{"message": "ok", "seconds": -Infinity}'],
    ],
)
def test_dispatch_refuses_values_no_driver_can_store(qdb, cli, options):
    bad = cli("queue", "dispatch", "DemoJob", *options)
    assert bad.exit_code == 2, (bad.output, bad.exception)
    (line,) = bad.stderr.splitlines()
    assert line.startswith("error: "), line
    assert JobRecord.select().count() == 0


def test_dispatch_accepts_an_escaped_backslash_before_u0000(qdb, cli):
    # The text backslash-u-0000 is no NUL character and any driver stores it.
    ok = cli("queue", "dispatch", "DemoJob", "--args", '{"message": "a\\\\u0000b"}')
    assert ok.exit_code == 0, ok.output
    (job,) = JobRecord.select()
    assert job.payload["args"]["message"] == "a\\u0000b"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (float("nan"), "NaN or Infinity"),
        (float("inf"), "NaN or Infinity"),
        ("a\x00b", "NUL character"),
        ({"k\x00": 1}, "NUL character"),
    ],
)
def test_job_dispatch_refuses_arguments_no_driver_can_store(qdb, value, shown):
    with pytest.raises(ValueError, match=shown):
        Boom(key=value).dispatch()
    with pytest.raises(ValueError, match="delay must be seconds between 0 and"):
        Boom(key="fine").dispatch(delay=1e30)
    with pytest.raises(ValueError, match="delay must be seconds between 0 and"):
        Boom(key="fine").dispatch(delay=float("nan"))
    assert JobRecord.select().count() == 0


@pytest.mark.parametrize(
    "options",
    [
        ["--sleep", "nan"],
        ["--sleep", "inf"],
        ["--timeout", "nan"],
        ["--timeout", "1e30"],
        ["--backoff", "nan"],
        ["--backoff", "10,nan"],
        ["--backoff", "inf"],
        ["--max-time", "nan"],
        ["--max-time", "inf"],
        ["--rest", "nan"],
        ["--memory", "nan"],
    ],
)
def test_work_refuses_non_finite_seconds(tmp_path, options):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = invoke("work", "--once", *options, TOURNO_DATABASE_URL=url)
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"'{options[0]}'" in result.stderr
    assert not (tmp_path / "q.db").exists()


def test_options_are_not_read_from_hidden_variables(qdb, cli):
    # click's auto_envvar_prefix would read TOURNO_QUEUE_DISPATCH_COUNT.
    result = cli("queue", "dispatch", "DemoJob", TOURNO_QUEUE_DISPATCH_COUNT="3")
    assert result.exit_code == 0, result.output
    assert JobRecord.select().count() == 1


# -- configuration ------------------------------------------------------------------


def test_config_masks_the_password():
    result = invoke("config", TOURNO_DATABASE_URL="postgresql://u:secret@h/db", TOURNO_LOG_LEVEL="debug")
    assert result.exit_code == 0, result.output
    assert "secret" not in result.output
    rows = {name: value for name, value, _ in table_rows(result.stdout)}
    assert rows["TOURNO_DATABASE_URL"] == "postgresql://u:***@h/db"
    assert rows["TOURNO_LOG_LEVEL"] == "debug"
    assert rows["TOURNO_QUEUE_CONNECTION"] == "database"
    assert set(rows) == {name for name, _ in Settings().describe()}


def test_config_reads_the_env_file_option(tmp_path):
    env_file = tmp_path / "tourno.env"
    env_file.write_text("TOURNO_LOG_LEVEL=warning\nTOURNO_DATABASE_URL=postgresql://u:filesecret@h/db\n")
    result = invoke("--env-file", str(env_file), "config", TOURNO_LOG_LEVEL="error")
    assert result.exit_code == 0, result.output
    rows = {name: (value, source) for name, value, source in table_rows(result.stdout)}
    assert rows["TOURNO_LOG_LEVEL"] == ("error", "environment")  # the environment wins
    assert rows["TOURNO_DATABASE_URL"] == ("postgresql://u:***@h/db", f"env file ({env_file})")
    assert rows["TOURNO_MAIL_RATE"] == ("10.0", "default")
    assert "filesecret" not in result.output


def test_config_shows_no_python_values_and_has_json(tmp_path):
    env_file = tmp_path / "tourno.env"
    env_file.write_text("TOURNO_MAIL_RATE=5\nTOURNO_LOG_LEVEL=warning\n")
    result = invoke(
        "--env-file",
        str(env_file),
        "config",
        TOURNO_MAIL_RATE="3",
        TOURNO_SECRET_KEY="s" * 20,
        TOURNO_IMPORTS="",
    )
    assert result.exit_code == 0, result.output
    rows = {name: (value, source) for name, value, source in table_rows(result.stdout)}
    assert "None" not in result.stdout and "True" not in result.stdout
    assert rows["TOURNO_MAIL_USERNAME"] == ("(not set)", "default")
    assert rows["TOURNO_IMPORTS"] == ("(not set)", "default")  # blank counts as unset
    assert rows["TOURNO_QUEUE_METRICS"] == ("1", "default")
    assert rows["TOURNO_SECRET_KEY"] == ("***", "environment")
    assert rows["TOURNO_MAIL_RATE"] == ("3.0", "environment")
    assert rows["TOURNO_LOG_LEVEL"] == ("warning", f"env file ({env_file})")

    as_json = invoke(
        "--env-file", str(env_file), "config", "--json", TOURNO_MAIL_RATE="3", TOURNO_SECRET_KEY="s" * 20
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["env_file"] == str(env_file)
    settings = data["settings"]
    assert set(settings) == {name for name, _ in Settings().describe()}
    assert settings["TOURNO_MAIL_USERNAME"] == {"value": None, "source": "default"}
    assert settings["TOURNO_MAIL_RATE"] == {"value": "3.0", "source": "environment"}
    assert settings["TOURNO_LOG_LEVEL"] == {"value": "warning", "source": "env file"}
    assert settings["TOURNO_SECRET_KEY"] == {"value": "***", "source": "environment"}
    assert "s" * 20 not in as_json.stdout


# -- a real process, end to end -------------------------------------------------------


def test_subprocess_end_to_end(sqlite, tmp_path):
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    env = sqlite.env(TOURNO_DATABASE_URL=url, COLUMNS=WIDE)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            tourno_cmd(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    migrate = run("db", "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stdout.splitlines() == [f"applied {name}" for name in MIGRATIONS]

    dispatch = run("queue", "dispatch", "DemoJob", "--args", '{"message": "end to end"}')
    assert dispatch.returncode == 0, dispatch.stderr
    assert dispatch.stdout.strip() == "Dispatched 1 DemoJob job(s): 1"

    work = run("work", "--stop-when-empty", "--sleep", "0.1")
    assert work.returncode == 0, work.stderr
    assert "DemoJob: end to end" in work.stderr  # logs go to stderr

    status = run("queue", "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["queues"] == []
    assert data["failed"] == 0
    # Not asserted: data["workers"] == [], see test_an_exited_worker_is_not_shown_as_live.


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOURNO_QUEUE_CONNECTION", "kafka"),
        ("TOURNO_REDIS_URL", "http://cache:6379/0"),
        ("TOURNO_HEARTBEAT_INTERVAL", "abc"),
        ("TOURNO_WORKER_STALE_AFTER", "1"),
        ("TOURNO_DATABASE_URL", "mysql://x"),
        ("TOURNO_LOG_LEVEL", "loud"),
        ("TOURNO_IMPORTS", "no_such_module_for_tourno_tests"),
        ("TOURNO_WORKER_STALE_AFTER", "nan"),
        ("TOURNO_DATABASE_URL", "postgresql://u@127.0.0.1:99999/db"),
        ("TOURNO_DATABASE_URL", "postgresql://u@:::/db"),
        ("TOURNO_REDIS_URL", "redis://127.0.0.1:6379/abc"),
    ],
)
@pytest.mark.parametrize("command", [["queue", "status"], ["work", "--once"]])
def test_bad_setting_is_one_line_naming_the_variable(tmp_path, variable, value, command):
    env = {"TOURNO_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}", variable: value}
    if variable == "TOURNO_REDIS_URL":
        env["TOURNO_QUEUE_CONNECTION"] = "redis"
    result = invoke(*command, **env)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert variable in lines[0]
    assert result.stdout == ""
    # Refused before touching the database.
    assert not (tmp_path / "q.db").exists()


def test_bad_env_file_line_is_one_line(tmp_path):
    env_file = tmp_path / "tourno.env"
    env_file.write_text("TOURNO_LOG_LEVEL=info\nthis is not a setting\n")
    result = invoke("queue", "status", TOURNO_ENV_FILE=str(env_file))
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: TOURNO_ENV_FILE: ")
    assert "line 2" in line


@pytest.mark.parametrize(
    "command",
    [
        ["queue", "status"],
        ["queue", "failed"],
        ["queue", "retry", "all"],
        ["db", "migrate"],
        ["db", "status"],
        ["work", "--once"],
    ],
)
def test_database_down(command):
    url = "postgresql://tourno:hunter2@127.0.0.1:1/tourno"
    result = invoke(*command, TOURNO_DATABASE_URL=url)
    assert result.exit_code == 1, (result.output, result.exception)
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "error: cannot connect to the database postgresql://tourno:***@127.0.0.1:1/tourno: "
    )
    assert "hunter2" not in result.output


def test_sqlite_in_a_missing_directory_cannot_connect(tmp_path):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'q.db'}"
    result = invoke("db", "migrate", TOURNO_DATABASE_URL=url)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot connect to the database sqlite:///")


READ_ONLY_COMMANDS = [
    ["queue", "status"],
    ["queue", "size"],
    ["queue", "failed"],
    ["queue", "stats"],
    ["queue", "monitor"],
    ["db", "status"],
    ["schedule", "list"],
    ["users", "list"],
    ["mail", "status"],
    ["work", "--once"],
]


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS)
def test_a_missing_sqlite_file_is_one_line_and_is_not_created(tmp_path, command):
    path = tmp_path / "q.db"
    result = invoke(*command, TOURNO_DATABASE_URL=f"sqlite:///{path}")
    assert result.exit_code == 1, (result.output, result.exception)
    (line,) = result.stderr.splitlines()
    assert line == (
        f"error: the database schema is not up to date: there is no SQLite database at {path} "
        f"(TOURNO_DATABASE_URL=sqlite:///{path}); create it with `tourno db migrate`"
    )
    assert not path.exists()


def test_an_operator_in_an_empty_directory(tmp_path):
    """The default database is tourno.db in the working directory: the
    read-only commands, run for real, leave nothing there; migrate creates it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_") and k != "COLUMNS"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            tourno_cmd(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    for command in (["queue", "status"], ["queue", "failed"], ["schedule", "list"], ["doctor"]):
        result = run(*command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert f"no SQLite database at {tmp_path / 'tourno.db'}" in output, (command, output)
        assert "tourno db migrate" in output, (command, output)
        assert "Traceback" not in result.stderr
        assert list(tmp_path.iterdir()) == [], command
    config = run("config")
    assert config.returncode == 0, config.stderr
    assert list(tmp_path.iterdir()) == []
    migrate = run("db", "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "tourno.db").is_file()
    # Each migration is reported once (playhouse logs "up: NAME" only with -v).
    for name in MIGRATIONS:
        assert (migrate.stdout + migrate.stderr).count(name) == 1, (migrate.stdout, migrate.stderr)
    assert run("queue", "status").returncode == 0


@pytest.mark.parametrize("command", [["queue", "status"], ["queue", "failed"], ["work", "--once"]])
def test_schema_not_migrated(tmp_path, command):
    path = tmp_path / "empty.db"
    path.touch()
    result = invoke(*command, TOURNO_DATABASE_URL=f"sqlite:///{path}")
    assert result.exit_code == 1, (result.output, result.exception)
    (line,) = result.stderr.splitlines()
    assert MIGRATIONS[0] == "0001_queue"
    assert line == (
        f"error: the database schema is not up to date ({len(MIGRATIONS)} migration(s) pending: "
        f"{', '.join(MIGRATIONS)}); run `tourno db migrate`"
    )
    # Nothing was created behind the operator's back.
    db = tdb.connect(f"sqlite:///{path}")
    db.connect()
    try:
        assert "jobs" not in db.get_tables()
    finally:
        db.close()
