"""The dashboard in a real headless Chromium (Debian's ``chromium`` package,
driven by Playwright for Python; no browser is downloaded). The app runs on
a loopback port in a server thread of this process, on the test's real
PostgreSQL database; a real ``tourno work`` subprocess runs a retried job.

Each test saves screenshots of its pages to ``build/screenshots/`` (the
README names the folder) for a reviewer to look at.

Without /usr/bin/chromium (or the playwright package) these tests are
skipped, except under CI=true, where that is an error: ``.ci/run`` installs
the package when it is missing.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.conftest import ROOT, make_players, tourno_cmd
from tests.dashboard.conftest import make_failed_job
from tests.support.jobs import Noop, runs
from tourno.accounts.models import Role
from tourno.queue import failed
from tourno.queue.models import JobRecord
from tourno.tournaments import services

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "build" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Generous: a page and its poll on a loaded two-core machine.
WAIT_MS = 20_000


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc}); pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _missing()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


_responses = threading.local()


class _ClosingHandler(WSGIRequestHandler):
    """werkzeug's development handler, which closes every response it
    served. Its own close comes after it drains the socket, and a browser
    that dropped the connection (a page closed mid-poll) makes that drain
    raise first: a static file's handle would then be left to the garbage
    collector (a ResourceWarning, an error in this suite)."""

    def handle(self) -> None:
        _responses.open = []
        try:
            super().handle()
        finally:
            for body in _responses.open:
                close = getattr(body, "close", None)
                if close is not None:
                    close()  # closing twice is harmless
            _responses.open = []


def _remembering(app: Any) -> Any:
    def wsgi(environ: Any, start_response: Any) -> Any:
        body = app(environ, start_response)
        _responses.open.append(body)
        return body

    return wsgi


class Server:
    """The app on 127.0.0.1 and a free port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.server = make_server(
            "127.0.0.1", 0, _remembering(app), threaded=True, request_handler=_ClosingHandler
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="dashboard-server", daemon=True)
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(10)


@pytest.fixture
def server(app, monkeypatch) -> Iterator[Server]:
    from tourno.dashboard import pages

    # The overview re-reads its JSON twice a second, so a test sees it change quickly.
    monkeypatch.setattr(pages, "POLL_MS", 500)
    running = Server(app)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    # A blocked inline script or style, or a failed asset, shows up here.
    tab.problems = []
    tab.on("console", lambda m: m.type == "error" and tab.problems.append(m.text))
    tab.on("pageerror", lambda e: tab.problems.append(str(e)))
    try:
        yield tab
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Any, token: str) -> None:
    page.goto("/admin/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_admin_logs_in_and_the_overview_refreshes_itself(page, server, tokens):
    from playwright.sync_api import expect

    log_in(page, tokens["admin"])
    expect(page).to_have_url(f"{server.url}/admin")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("live")
    # A job dispatched now appears without a reload.
    Noop(n=1).dispatch()
    expect(page.locator("#queues tbody tr").first).to_contain_text("default")
    expect(page.locator("#queues tbody tr").first.locator("td").nth(1)).to_have_text("1")
    shot(page, "overview")
    assert page.problems == []
    # The server goes away: the page says its data is stale.
    server.stop()
    expect(page.locator("#live-state")).to_contain_text("server unreachable")
    expect(page.locator("#live")).to_have_class("live stale")
    shot(page, "overview-stale")


def test_the_overview_charts_are_drawn_and_their_totals_refresh(page, server, tokens):
    from playwright.sync_api import expect

    from tests.conftest import run_worker

    for n in range(3):
        Noop(n=n).dispatch()
    assert run_worker()[0] == 0
    log_in(page, tokens["admin"])
    chart = page.locator("#chart-hour-rate svg")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 40
    # The processed line is drawn (a line of 60 points has a width), and
    # styled by the stylesheet, not by inline style.
    line = page.locator('[data-line="hour-processed"]')
    line_box = line.bounding_box()
    assert line_box and line_box["width"] > 100
    assert line.evaluate("e => getComputedStyle(e).fill") == "none"
    expect(page.locator('#totals-hour [data-total="processed"]')).to_have_text("3")
    expect(page.locator('#totals-day [data-total="processed"]')).to_have_text("3")
    # More jobs run: the next poll carries the new counts, without a reload.
    for n in range(2):
        Noop(n=10 + n).dispatch()
    assert run_worker()[0] == 0
    expect(page.locator('#totals-hour [data-total="processed"]')).to_have_text("5")
    expect(page.locator("#chart-hour-rate desc")).to_contain_text("5 jobs processed")
    shot(page, "overview-charts")
    assert page.problems == []


def test_a_failed_job_is_retried_leaves_the_list_and_runs(page, server, tokens, pg, tmp_path):
    from playwright.sync_api import expect

    key = make_failed_job()
    (rec,) = list(failed.newest())
    log_in(page, tokens["admin"])
    page.get_by_role("link", name="Failed", exact=True).click()
    row = page.locator(f'#failed tr[data-id="{rec.id}"]')
    expect(row).to_contain_text("RuntimeError: flaky")
    shot(page, "failed-list")
    row.get_by_role("link", name=str(rec.id)).click()
    expect(page.locator("#traceback")).to_contain_text("Traceback (most recent call last)")
    expect(page.locator("#traceback")).to_contain_text(f"flaky {key} failing on purpose")
    expect(page.locator("#payload")).to_contain_text(rec.uuid)
    shot(page, "failed-job")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash.ok")).to_contain_text("Retried 1 job")
    expect(page.locator(f'#failed tr[data-id="{rec.id}"]')).to_have_count(0)
    shot(page, "failed-after-retry")
    assert failed.count() == 0
    # A real worker process picks the job up and this time it succeeds.
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            tourno_cmd("work", "--stop-when-empty", "--sleep", "0.1"),
            env=pg.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert worker.wait(60) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert runs(key) == 2
    assert JobRecord.select().count() == 0
    assert failed.count() == 0
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#failed")).to_have_text("0")
    assert page.problems == []


def test_a_double_elimination_bracket_is_drawn(page, tokens):
    from playwright.sync_api import expect

    org = services.create_user("org-b@example.com", "Org", role=Role.ORGANIZER)
    t = services.create_tournament(
        org, name="Winter Cup", game="Chess", format="double_elimination", capacity=8
    )
    t = services.publish(t, org)
    for user in make_players(6, prefix="bp"):
        services.register(t, user)
    services.start_tournament(t.id, org)
    log_in(page, tokens["admin"])
    page.get_by_role("link", name="Tournaments").click()
    page.get_by_role("link", name="Winter Cup").click()
    for bracket in ("winners", "losers", "grand_final"):
        expect(page.locator(f'.bracket[data-bracket="{bracket}"]')).to_be_visible()
    winners = page.locator('.bracket[data-bracket="winners"] .round')
    assert winners.count() == 3
    # Rounds are columns left to right: each round sits to the right of the one before.
    boxes = [winners.nth(i).bounding_box() for i in range(3)]
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
    expect(page.locator('.bracket[data-bracket="winners"] .match').first).to_contain_text("P")
    expect(page.locator("#standings")).to_contain_text("P0")
    shot(page, "bracket-double-elimination")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "bracket-double-elimination-phone")
    # The page is usable at phone width: the header does not push the page sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    assert page.problems == []


def test_anonymous_and_non_admins_are_refused_and_a_post_without_csrf_too(page, server, tokens):
    from playwright.sync_api import expect

    page.goto("/admin/failed")
    expect(page).to_have_url(f"{server.url}/admin/login?next=/admin/failed")
    shot(page, "login")
    log_in(page, tokens["player"])
    expect(page.locator(".flash.error")).to_contain_text("Only admins")
    page.goto("/admin")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()

    make_failed_job()
    log_in(page, tokens["admin"])
    page.goto("/admin/failed")
    # A forged request from the page itself, without the form's token.
    status = page.evaluate(
        """async () => (await fetch('/admin/failed/flush', {method: 'POST',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'},
            body: 'confirmed=yes'})).status"""
    )
    assert status == 400
    # The retry form with its token removed is refused, and the job stays.
    page.locator('#failed-form input[name="csrf_token"]').evaluate("node => node.remove()")
    page.locator('#failed input[name="ids"]').first.check()
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
    expect(page.locator(".message")).to_contain_text("CSRF")
    shot(page, "csrf-refused")
    assert failed.count() == 1
    # Logging out ends the session.
    page.goto("/admin")
    page.get_by_role("button", name="Log out").click()
    page.goto("/admin/workers")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_every_page_renders_without_a_blocked_script_or_style(page, tokens):
    """A screenshot of each page for the reviewer; a violation of the
    Content-Security-Policy (an inline script or style) would be a console error."""
    from playwright.sync_api import expect

    from tourno.mail.models import EmailOutbox, EmailStatus

    make_failed_job()
    for n in range(3):
        Noop(n=n).dispatch()
    Noop(n=9).dispatch(delay=600)
    EmailOutbox.create(
        dedupe_key="b1",
        to_email="gone@example.com",
        template="match_ready",
        status=EmailStatus.DEAD,
        last_error="550 5.1.1 no such user",
    )
    org = services.create_user("org-rr@example.com", "Org", role=Role.ORGANIZER)
    league = services.create_tournament(
        org, name="Autumn League", game="Go", format="round_robin", capacity=8
    )
    league = services.publish(league, org)
    for user in make_players(5, prefix="rr"):
        services.register(league, user)
    services.start_tournament(league.id, org)
    log_in(page, tokens["admin"])
    (job,) = JobRecord.select().where(JobRecord.available_at > JobRecord.created_at).limit(1)
    for name, path, heading in [
        ("workers", "/admin/workers", "Workers"),
        ("schedule", "/admin/schedule", "Schedule"),
        ("mail", "/admin/mail", "Mail"),
        ("jobs", "/admin/jobs?queue=default&state=ready", "Jobs"),
        ("job", f"/admin/jobs/{job.id}", f"Job {job.id}"),
        ("tournaments", "/admin/tournaments", "Tournaments"),
        ("round-robin", f"/admin/tournaments/{league.id}", "Autumn League"),
    ]:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
        shot(page, name)
        # Readable at phone width: wide tables scroll in their own box, the page does not.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1, name
    (rec,) = list(failed.newest())
    for path in ("/admin", "/admin/failed", f"/admin/failed/{rec.id}"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1, path
    shot(page, "failed-job-phone")
    # A destructive action asks first.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/admin/failed")
    page.get_by_role("button", name="Flush…").click()
    expect(page.get_by_role("heading", name="Flush failed jobs?")).to_be_visible()
    shot(page, "confirm-flush")
    page.get_by_role("link", name="Cancel").click()
    assert failed.count() == 1
    assert page.problems == []


def test_pause_stops_a_worker_claiming_resume_restarts_it_and_a_delayed_job_is_cancelled(
    page, tokens, pg, tmp_path
):
    """A real worker: it runs a job, stops claiming once the queue is paused
    from the page, and claims again on resume. The pause takes effect within
    about half a second (tourno.queue.pauses); the test allows 2 s of
    not-running as its evidence, and up to 30 s for the resumed run."""
    from playwright.sync_api import expect

    from tests.support.jobs import RecordRun

    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            tourno_cmd("work", "--sleep", "0.2"),
            env=pg.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        RecordRun(key="before").dispatch()
        wait_until(lambda: runs("before") == 1, "the worker to run a job")
        log_in(page, tokens["admin"])
        page.get_by_role("link", name="Queues").click()
        page.get_by_label("Queue").fill("default")
        page.get_by_role("button", name="Pause", exact=True).click()
        expect(page.locator(".flash.ok")).to_contain_text("Paused default")
        expect(page.locator('tr[data-queue="default"]')).to_contain_text("paused")
        RecordRun(key="during").dispatch()
        time.sleep(2.0)
        assert runs("during") == 0, log.read_text()
        assert worker.poll() is None
        shot(page, "queues-paused")
        page.get_by_role("button", name="Resume default").click()
        expect(page.locator(".flash.ok")).to_contain_text("Resumed default")
        wait_until(lambda: runs("during") == 1, "the worker to claim again after resume")
        shot(page, "queues-resumed")

        # A delayed job, cancelled from its page, never runs.
        jid = RecordRun(key="delayed").dispatch(delay=3600)
        page.goto("/admin/jobs?queue=default&state=delayed")
        page.get_by_role("link", name=str(jid), exact=True).click()
        expect(page.locator("#payload")).to_contain_text('"delayed"')
        page.get_by_role("button", name="Cancel job…").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(f"Cancel job {jid}")
        page.get_by_role("button", name="Cancel the job").click()
        expect(page.locator(".flash.ok")).to_contain_text(f"Cancelled job {jid}")
        shot(page, "job-cancelled")
        assert JobRecord.get_or_none(JobRecord.id == jid) is None
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
    assert worker.returncode == 0, log.read_text()
    assert runs("delayed") == 0
    assert page.problems == []
