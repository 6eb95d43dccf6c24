"""The dashboard through Flask's test client on a real PostgreSQL: every
route and who may reach it, the session cookie, CSRF on every POST, the
security headers, and the failed-job actions changing (or, refused, not
changing) the real tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest

from tests.conftest import run_worker
from tests.dashboard.conftest import SECRET, csrf_of, log_in, make_failed_job
from tests.support.jobs import Boom, Noop
from tourno.accounts.models import Role, User
from tourno.api import create_app
from tourno.api.auth import issue_token
from tourno.dashboard import charts
from tourno.mail.models import EmailOutbox, EmailStatus, EmailSuppression
from tourno.queue import dispatch_many, failed, metrics, pauses
from tourno.queue.models import FailedJobRecord, JobRecord
from tourno.tournaments import services

PAGES = [
    "/admin",
    "/admin/overview.json",
    "/admin/failed",
    "/admin/workers",
    "/admin/schedule",
    "/admin/mail",
    "/admin/jobs",
    "/admin/jobs?state=delayed",
    "/admin/jobs?state=reserved",
    "/admin/tournaments",
    "/admin/queues",
]
POSTS = [
    "/admin/schedule/run",
    "/admin/queues/pause",
    "/admin/queues/resume",
    "/admin/jobs/1/cancel",
    "/admin/logout",
    "/admin/failed/retry",
    "/admin/failed/retry-all",
    "/admin/failed/flush",
    "/admin/failed/1/retry",
    "/admin/failed/1/forget",
]


def text(response) -> str:
    return response.get_data(as_text=True)


def page_csrf(client, path: str = "/admin") -> str:
    return csrf_of(text(client.get(path)))


# -- who gets in ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p in PAGES if not p.endswith(".json")] + ["/admin/failed/1"])
def test_anonymous_pages_redirect_to_the_login(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=")


def test_anonymous_poll_hears_401(app):
    response = app.test_client().get("/admin/overview.json")
    assert response.status_code == 401
    assert response.get_json() == {"error": "not logged in"}


@pytest.mark.parametrize("path", POSTS)
def test_anonymous_posts_change_nothing(app, pg, path):
    make_failed_job()
    Noop(n=1).dispatch(delay=600)
    response = app.test_client().post(path, data={"confirmed": "yes", "ids": "1", "queue": "default"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")
    assert failed.count() == 1
    assert JobRecord.select().count() == 1
    assert pauses.paused() == {}


@pytest.mark.parametrize("role", ["player", "organizer"])
def test_a_non_admin_token_is_refused(app, tokens, role):
    client = app.test_client()
    response = log_in(client, tokens[role])
    assert response.status_code == 403
    assert "Only admins" in text(response)
    assert client.get("/admin").status_code == 302


def test_an_unknown_token_is_refused(app, tokens):
    client = app.test_client()
    assert log_in(client, "not-a-token").status_code == 401
    assert log_in(client, "x" * 500).status_code == 401
    assert client.get("/admin").status_code == 302


def test_an_admin_logs_in_and_reaches_every_page(app, tokens):
    client = app.test_client()
    response = log_in(client, tokens["admin"])
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin"
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, (path, text(page)[:500])
    assert "Log out" in text(client.get("/admin"))


def test_login_returns_to_the_page_asked_for_and_never_elsewhere(app, tokens):
    client = app.test_client()
    form = text(client.get("/admin/login?next=/admin/workers"))
    response = client.post(
        "/admin/login", data={"token": tokens["admin"], "next": "/admin/workers", "csrf_token": csrf_of(form)}
    )
    assert response.headers["Location"] == "/admin/workers"
    for target in ("https://evil.example/", "//evil.example/admin", "/admin//evil.example", "/api/v1/users"):
        other = app.test_client()
        form = text(other.get("/admin/login"))
        response = other.post(
            "/admin/login", data={"token": tokens["admin"], "next": target, "csrf_token": csrf_of(form)}
        )
        assert response.headers["Location"] == "/admin", target


def test_a_reissued_token_ends_the_session(admin_client):
    assert admin_client.get("/admin").status_code == 200
    issue_token(User.get(User.email == "admin@example.com"))
    assert admin_client.get("/admin").status_code == 302


def test_a_demoted_admin_loses_access_at_once(admin_client):
    User.update(role=Role.ORGANIZER).where(User.email == "admin@example.com").execute()
    assert admin_client.get("/admin").status_code == 302


def test_logout_ends_the_session(admin_client):
    response = admin_client.post("/admin/logout", data={"csrf_token": page_csrf(admin_client)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/login"
    assert admin_client.get("/admin").status_code == 302


def test_without_a_secret_key_the_dashboard_refuses(pg, tokens):
    app = create_app(dataclasses.replace(pg.settings, secret_key=None), init_database=False)
    client = app.test_client()
    for path in ("/admin", "/admin/login"):
        response = client.get(path)
        assert response.status_code == 503
        assert "TOURNO_SECRET_KEY" in text(response)
        assert "Set-Cookie" not in response.headers
    # The API itself is unaffected.
    assert client.get("/healthz").status_code == 200


def test_debug_mode_signs_with_a_key_of_its_own(pg, tokens):
    app = create_app(dataclasses.replace(pg.settings, secret_key=None), init_database=False)
    app.debug = True
    client = app.test_client()
    assert log_in(client, tokens["admin"]).status_code == 302
    assert client.get("/admin").status_code == 200


# -- the cookie and the headers -----------------------------------------------------------


def test_the_session_cookie_is_httponly_strict_scoped_and_expiring(app, tokens):
    client = app.test_client()
    response = log_in(client, tokens["admin"])
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("tourno_admin=")
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert "httponly" in parts
    assert "samesite=strict" in parts
    assert "path=/admin" in parts
    assert "secure" not in parts
    expires = next(p for p in parts if p.startswith("expires="))
    when = dt.datetime.strptime(expires[len("expires=") :], "%a, %d %b %Y %H:%M:%S gmt").replace(
        tzinfo=dt.UTC
    )
    assert dt.timedelta(hours=11) < when - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=12, minutes=1)


def test_the_cookie_is_secure_over_https_or_behind_an_https_app_url(pg, app, tokens):
    client = app.test_client()
    page = client.get("/admin/login", base_url="https://localhost")
    response = client.post(
        "/admin/login",
        data={"token": tokens["admin"], "csrf_token": csrf_of(text(page))},
        base_url="https://localhost",
    )
    assert "secure" in [p.strip().lower() for p in response.headers["Set-Cookie"].split(";")]
    behind = create_app(
        dataclasses.replace(pg.settings, secret_key=SECRET, app_url="https://tourno.example"),
        init_database=False,
    )
    response = log_in(behind.test_client(), tokens["admin"])
    assert "secure" in [p.strip().lower() for p in response.headers["Set-Cookie"].split(";")]


@pytest.mark.parametrize("path", ["/admin/login", "/admin", "/admin/nowhere", "/admin/static/dashboard.css"])
def test_every_admin_response_carries_the_security_headers(admin_client, path):
    response = admin_client.get(path)
    response.close()
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'self'")
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_api_keeps_its_own_headers(app):
    assert "Content-Security-Policy" not in app.test_client().get("/healthz").headers


def test_pages_have_no_inline_script_or_style_and_no_other_host(admin_client):
    for path in [p for p in PAGES if not p.endswith(".json")]:
        html = text(admin_client.get(path))
        assert "<script>" not in html and "<style" not in html and " style=" not in html, path
        assert " on" + "click=" not in html
        assert "http://" not in html and "https://" not in html, path


def test_the_assets_are_served_by_tourno(app):
    client = app.test_client()
    css = client.get("/admin/static/dashboard.css")
    js = client.get("/admin/static/dashboard.js")
    css.close()
    js.close()
    assert css.status_code == js.status_code == 200
    assert "text/css" in css.headers["Content-Type"]
    assert "javascript" in js.headers["Content-Type"]


# -- CSRF -------------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(admin_client):
    make_failed_job()
    (rec,) = list(failed.newest())
    for path in (f"/admin/failed/{rec.id}/retry", "/admin/failed/retry-all", "/admin/failed/flush"):
        response = admin_client.post(path, data={"ids": str(rec.id), "confirmed": "yes"})
        assert response.status_code == 400, path
        assert "CSRF" in text(response)
    assert failed.count() == 1
    assert JobRecord.select().count() == 0


def test_a_post_with_a_wrong_csrf_token_is_refused(admin_client):
    make_failed_job()
    (rec,) = list(failed.newest())
    response = admin_client.post(
        f"/admin/failed/{rec.id}/forget", data={"confirmed": "yes", "csrf_token": "forged"}
    )
    assert response.status_code == 403
    response = admin_client.post(
        f"/admin/failed/{rec.id}/forget", data={"confirmed": "yes"}, headers={"X-CSRF-Token": "forged"}
    )
    assert response.status_code == 403
    assert failed.count() == 1


def test_another_sessions_csrf_token_is_refused(app, tokens, admin_client):
    make_failed_job()
    other = app.test_client()
    log_in(other, tokens["admin"])
    response = admin_client.post(
        "/admin/failed/flush", data={"confirmed": "yes", "csrf_token": page_csrf(other)}
    )
    assert response.status_code == 403
    assert failed.count() == 1


def test_login_and_logout_need_the_csrf_token_too(app, tokens, admin_client):
    client = app.test_client()
    response = client.post("/admin/login", data={"token": tokens["admin"]})
    assert response.status_code == 400
    assert client.get("/admin").status_code == 302
    assert admin_client.post("/admin/logout").status_code == 400
    assert admin_client.get("/admin").status_code == 200


# -- failed jobs ------------------------------------------------------------------------------


def test_the_failed_list_and_one_job_show_the_whole_traceback(admin_client):
    key = make_failed_job()
    (rec,) = list(failed.newest())
    listing = text(admin_client.get("/admin/failed"))
    assert "RuntimeError: flaky " + key in listing
    assert "Flaky" in listing
    page = admin_client.get(f"/admin/failed/{rec.id}")
    assert page.status_code == 200
    body = text(page)
    assert "Traceback (most recent call last)" in body
    assert "failing on purpose" in body
    assert rec.uuid in body
    assert f"<dt>Attempts</dt><dd>{rec.attempts}</dd>" in body and rec.attempts is not None
    assert admin_client.get("/admin/failed/999999").status_code == 404


def test_retry_one_puts_the_job_back(admin_client):
    make_failed_job()
    (rec,) = list(failed.newest())
    response = admin_client.post(
        f"/admin/failed/{rec.id}/retry", data={"csrf_token": page_csrf(admin_client)}
    )
    assert response.status_code == 302
    assert failed.count() == 0
    (job,) = JobRecord.select()
    assert job.payload["uuid"] == rec.uuid
    assert "Retried 1 job" in text(admin_client.get("/admin/failed"))


def test_retry_selected_retries_only_those(admin_client):
    for _ in range(3):
        make_failed_job()
    ids = sorted(r.id for r in failed.newest())
    response = admin_client.post(
        "/admin/failed/retry", data={"ids": [str(ids[0]), str(ids[2])], "csrf_token": page_csrf(admin_client)}
    )
    assert response.status_code == 302
    assert [r.id for r in failed.newest()] == [ids[1]]
    assert JobRecord.select().count() == 2


def test_retry_all_asks_first_then_retries_one_queue(admin_client):
    make_failed_job()
    make_failed_job()
    FailedJobRecord.update(queue="other").where(FailedJobRecord.id == 1).execute()
    token = page_csrf(admin_client)
    ask = admin_client.post("/admin/failed/retry-all", data={"queue": "default", "csrf_token": token})
    assert ask.status_code == 200
    assert 'name="confirmed" value="yes"' in text(ask)
    assert failed.count() == 2
    done = admin_client.post(
        "/admin/failed/retry-all", data={"queue": "default", "confirmed": "yes", "csrf_token": token}
    )
    assert done.status_code == 302
    assert [r.queue for r in failed.newest()] == ["other"]


def test_forget_and_flush_ask_first(admin_client):
    for _ in range(3):
        make_failed_job()
    first = min(r.id for r in failed.newest())
    token = page_csrf(admin_client)
    assert admin_client.post(f"/admin/failed/{first}/forget", data={"csrf_token": token}).status_code == 200
    assert failed.count() == 3
    admin_client.post(f"/admin/failed/{first}/forget", data={"confirmed": "yes", "csrf_token": token})
    assert failed.count() == 2
    # Flush only those older than an hour: none is.
    admin_client.post("/admin/failed/flush", data={"hours": "1", "confirmed": "yes", "csrf_token": token})
    assert failed.count() == 2
    bad = admin_client.post("/admin/failed/flush", data={"hours": "soon", "csrf_token": token})
    assert bad.status_code == 302
    assert failed.count() == 2
    assert admin_client.post("/admin/failed/flush", data={"csrf_token": token}).status_code == 200
    admin_client.post("/admin/failed/flush", data={"confirmed": "yes", "csrf_token": token})
    assert failed.count() == 0


# -- the other pages --------------------------------------------------------------------------


def test_the_overview_and_its_json_count_the_queues(admin_client):
    make_failed_job()
    for n in range(3):
        Noop(n=n).dispatch()
    Noop(n=9).dispatch(delay=3600)
    data = admin_client.get("/admin/overview.json").get_json()
    (default,) = [q for q in data["queues"] if q["queue"] == "default"]
    assert (default["ready"], default["delayed"], default["reserved"]) == (3, 1, 0)
    assert data["failed"] == 1
    assert set(data["mail"]) == {s.value for s in EmailStatus}
    html = text(admin_client.get("/admin"))
    assert 'id="live"' in html and "overview.json" in html


def test_past_the_cap_the_overview_shows_estimates_not_whole_table_counts(admin_client, pg, monkeypatch):
    from tourno.dashboard import pages

    dispatch_many(Noop(n=n) for n in range(30))
    pg.database.execute_sql("ANALYZE jobs")
    monkeypatch.setattr(pages, "COUNT_CAP", 10)  # stands for the 10,000 of a large install
    data = admin_client.get("/admin/overview.json").get_json()
    (default,) = [q for q in data["queues"] if q["queue"] == "default"]
    assert default["ready"] >= 11 and default["ready_text"] == f"≈{default['ready']:,}"
    assert (default["delayed_text"], default["reserved_text"]) == ("0", "0")  # under the cap: exact
    assert data["failed_text"] == "0" and data["mail"]["sent"] == "0"
    html = text(admin_client.get("/admin"))
    assert f"<td>≈{default['ready']:,}</td>" in html


def _totals(html: str, chart: str) -> dict[str, str]:
    block = html[html.index(f'id="totals-{chart}"') :]
    block = block[: block.index("</dl>")]
    return dict(re.findall(r'data-total="(\w+)">([^<]*)<', block))


def test_the_overview_charts_the_jobs_processed_and_failed_from_the_persisted_metrics(admin_client):
    for n in range(3):
        Noop(n=n).dispatch()
    Boom(key="chart").dispatch()
    code, _ = run_worker(tries=1)
    assert code == 0

    html = text(admin_client.get("/admin"))
    # Two windows, each a rate chart and a wait chart, drawn as SVG with a
    # title and a text summary, and no inline style (the CSP forbids it).
    assert html.count("<svg ") == 4 and html.count("<title id=") == 4
    for kind in ("hour-rate", "hour-wait", "day-rate", "day-wait"):
        assert f'id="chart-{kind}"' in html
    assert "Jobs per minute, last 60 minutes (1 min steps)" in html
    assert "Mean wait, last 24 hours (30 min steps)" in html
    assert "style=" not in html and "<script>" not in html
    for chart in ("hour", "day"):
        totals = _totals(html, chart)
        assert (totals["processed"], totals["failed"], totals["released"]) == ("3", "1", "0")
        assert totals["mean_wait"].endswith(" s")
    assert "Last 60 minutes: 3 jobs processed, 1 failed" in html
    # 60 points on the hour's lines, 48 on the day's.
    hour_line = re.search(r'data-line="hour-processed" points="([^"]*)"', html)
    assert hour_line and len(hour_line.group(1).split()) == 60
    day_line = re.search(r'data-line="day-failed" points="([^"]*)"', html)
    assert day_line and len(day_line.group(1).split()) == 48

    # The polling JSON carries the same numbers, for the script to refresh them.
    data = admin_client.get("/admin/overview.json").get_json()
    hour, day = data["charts"]
    assert (hour["id"], day["id"]) == ("hour", "day")
    assert (hour["totals"]["processed"], hour["totals"]["failed"]) == (3, 1)
    assert hour["rate"]["processed"] == hour_line.group(1)

    # More jobs: the next poll's hour has them; the day is the read of less
    # than a minute ago, reused (it is re-read once a minute).
    Noop(n=7).dispatch()
    assert run_worker()[0] == 0
    hour, day = admin_client.get("/admin/overview.json").get_json()["charts"]
    assert (hour["totals"]["processed"], day["totals"]["processed"]) == (4, 3)


def test_chart_geometry_puts_the_peak_at_the_top_and_zero_at_the_bottom():
    buckets = [metrics.Bucket(60 * i) for i in range(4)]
    buckets[2].succeeded, buckets[2].runs, buckets[2].wait_sum = 7, 7, 14.0
    c = charts.chart(charts.Window("t", "Test", 4, 1), buckets)
    assert c["rate"]["top"] == "10"  # 7 per minute, on a scale to 10
    xs_ys = [tuple(map(float, p.split(","))) for p in c["rate"]["processed"].split()]
    width = charts.WIDTH - charts.RIGHT - charts.LEFT
    assert [x for x, _ in xs_ys] == [pytest.approx(charts.LEFT + i * width / 3, abs=0.1) for i in range(4)]
    bottom, top = charts.HEIGHT - charts.BOTTOM, charts.TOP
    assert [y for _, y in xs_ys] == [
        bottom,
        bottom,
        pytest.approx(bottom - 0.7 * (bottom - top), abs=0.1),
        bottom,
    ]
    assert c["wait"]["top"] == "2.0 s" and c["totals"]["mean_wait"] == "2.0 s"
    assert [charts.nice_ceiling(v) for v in (0, 1, 1.5, 3, 7, 10, 11, 450)] == [1, 1, 2, 5, 10, 10, 20, 500]


def test_jobs_by_state_search_and_keyset_pages(admin_client, monkeypatch):
    from tourno.dashboard import jobs as jobs_view

    monkeypatch.setattr(jobs_view, "PAGE_ROWS", 2)
    ids = [Noop(n=n).dispatch() for n in range(5)]
    Noop(n=99).dispatch(delay=3600)
    first = text(admin_client.get("/admin/jobs?queue=default&state=ready"))
    assert first.count('href="/admin/jobs/') == 2
    assert "after=" in first
    records = list(JobRecord.select().order_by(JobRecord.id))
    second = text(admin_client.get(f"/admin/jobs?queue=default&state=ready&after={records[1].id}"))
    assert f'href="/admin/jobs/{records[2].id}"' in second
    assert f'href="/admin/jobs/{records[0].id}"' not in second
    delayed = text(admin_client.get("/admin/jobs?state=delayed"))
    assert f'href="/admin/jobs/{records[5].id}"' in delayed
    uuid = records[3].payload["uuid"]
    found = text(admin_client.get(f"/admin/jobs?state=ready&q={uuid}"))
    assert found.count('href="/admin/jobs/') == 1
    assert f'href="/admin/jobs/{records[3].id}"' in found
    by_name = text(admin_client.get(f"/admin/jobs?state=ready&q={records[0].payload['job']}"))
    assert by_name.count('href="/admin/jobs/') == 2
    page = admin_client.get(f"/admin/jobs/{records[3].id}")
    assert page.status_code == 200
    assert f"&#34;uuid&#34;: &#34;{uuid}&#34;" in text(page)
    assert admin_client.get("/admin/jobs/999999").status_code == 404
    assert admin_client.get("/admin/jobs?state=finished").status_code == 400
    assert ids


def test_workers_schedule_and_mail_pages_show_their_snapshots(admin_client):
    EmailOutbox.create(
        dedupe_key="k1",
        to_email="gone@example.com",
        template="match_ready",
        status=EmailStatus.DEAD,
        last_error="550 no such user",
    )
    EmailSuppression.create(address="gone@example.com", reason="hard_bounce", detail="550")
    mail = text(admin_client.get("/admin/mail"))
    assert "550 no such user" in mail and "hard_bounce" in mail
    schedule = text(admin_client.get("/admin/schedule"))
    for task in ("AutoStartTournamentsJob", "SendBulkEmailsJob", "CheckMatchDeadlinesJob"):
        assert task in schedule
    # Never dispatched: each task's current slot is due.
    assert schedule.count("due now") == 5
    assert "No live workers" in text(admin_client.get("/admin/workers"))


def test_tournaments_list_filters_and_a_double_elimination_bracket(admin_client):
    from tests.conftest import make_players

    org = services.create_user("org2@example.com", "Org", role=Role.ORGANIZER)
    t = services.create_tournament(
        org, name="Winter Cup", game="Chess", format="double_elimination", capacity=8
    )
    services.create_tournament(org, name="Go League", game="Go", format="round_robin", capacity=8)
    t = services.publish(t, org)
    for user in make_players(6, prefix="rp"):
        services.register(t, user)
    services.start_tournament(t.id, org)
    listing = text(admin_client.get("/admin/tournaments?format=double_elimination"))
    assert "Winter Cup" in listing and "Go League" not in listing
    assert "Go League" in text(admin_client.get("/admin/tournaments?game=Go"))
    assert admin_client.get("/admin/tournaments?state=nonsense").status_code == 400
    page = admin_client.get(f"/admin/tournaments/{t.id}")
    assert page.status_code == 200
    html = text(page)
    for section in ('data-bracket="winners"', 'data-bracket="losers"', 'data-bracket="grand_final"'):
        assert section in html
    assert "P0" in html and "Standings" in html
    assert admin_client.get("/admin/tournaments/999999").status_code == 404


def _started_double_elimination(prefix: str):
    from tests.conftest import make_players

    org = services.create_user(f"{prefix}-org@example.com", "Org", role=Role.ORGANIZER)
    t = services.create_tournament(
        org, name="Spring Cup", game="Chess", format="double_elimination", capacity=8
    )
    t = services.publish(t, org)
    for user in make_players(4, prefix=prefix):
        services.register(t, user)
    return services.start_tournament(t.id, org)


def test_organizer_actions_ask_first_then_call_the_services(admin_client):
    from tourno.tournaments.models import Match, MatchState, Tournament, TournamentState

    t = _started_double_elimination("oa")
    m = Match.select().where((Match.tournament == t.id) & (Match.state == MatchState.OPEN)).first()
    token = page_csrf(admin_client, f"/admin/tournaments/{t.id}")
    deadline = m.deadline_at
    ask = admin_client.post(f"/admin/matches/{m.id}/deadline", data={"minutes": "90", "csrf_token": token})
    assert ask.status_code == 200 and 'value="yes"' in text(ask)
    assert Match.get_by_id(m.id).deadline_at == deadline
    done = admin_client.post(
        f"/admin/matches/{m.id}/deadline", data={"minutes": "90", "confirmed": "yes", "csrf_token": token}
    )
    assert done.status_code == 302
    assert Match.get_by_id(m.id).deadline_at > deadline
    # The rules' refusal is shown and nothing changes: a draw cannot decide an elimination match.
    admin_client.post(
        f"/admin/matches/{m.id}/resolve",
        data={"player1_score": "1", "player2_score": "1", "confirmed": "yes", "csrf_token": token},
    )
    assert Match.get_by_id(m.id).state == MatchState.OPEN
    assert "Not decided" in text(admin_client.get(f"/admin/tournaments/{t.id}"))
    admin_client.post(
        f"/admin/matches/{m.id}/resolve",
        data={"player1_score": "2", "player2_score": "0", "confirmed": "yes", "csrf_token": token},
    )
    decided = Match.get_by_id(m.id)
    assert decided.state == MatchState.COMPLETE and decided.winner_id == decided.player1_id
    # Cancel asks first, then cancels.
    assert (
        admin_client.post(f"/admin/tournaments/{t.id}/cancel", data={"csrf_token": token}).status_code == 200
    )
    assert Tournament.get_by_id(t.id).state == TournamentState.UNDERWAY
    admin_client.post(f"/admin/tournaments/{t.id}/cancel", data={"confirmed": "yes", "csrf_token": token})
    assert Tournament.get_by_id(t.id).state == TournamentState.CANCELLED
    # Without the CSRF token nothing happens.
    other = Match.select().where((Match.tournament == t.id) & (Match.id != m.id)).first()
    before = Match.get_by_id(other.id).deadline_at
    refused = admin_client.post(
        f"/admin/matches/{other.id}/deadline", data={"minutes": "90", "confirmed": "yes"}
    )
    assert refused.status_code == 400
    assert Match.get_by_id(other.id).deadline_at == before
    assert admin_client.post("/admin/matches/999999/resolve", data={"csrf_token": token}).status_code == 404


def test_stored_text_is_escaped_not_run(admin_client):
    failed.record(
        "00000000-0000-0000-0000-000000000001",
        "database",
        "<b>q</b>",
        '{"job": "<script>alert(1)</script>", "uuid": "00000000-0000-0000-0000-000000000001"}',
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: <img src=x onerror=alert(1)>',
    )
    (rec,) = list(failed.newest())
    for path in ("/admin/failed", f"/admin/failed/{rec.id}"):
        html = text(admin_client.get(path))
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>q</b>" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_every_page_on_sqlite(sqlite):
    """The embedded default (``tourno up``): the same pages on an SQLite file."""
    import tourno

    tourno.import_modules(["tourno.jobs"])
    app = create_app(dataclasses.replace(sqlite.settings, secret_key=SECRET), init_database=False)
    admin = services.create_user("admin@example.com", "Admin", role=Role.ADMIN)
    client = app.test_client()
    assert log_in(client, issue_token(admin)).headers["Location"] == "/admin"
    t = _started_double_elimination("sq")
    make_failed_job()
    Noop(n=1).dispatch()
    (job,) = JobRecord.select()
    (rec,) = list(failed.newest())
    for path in [
        *PAGES,
        f"/admin/failed/{rec.id}",
        f"/admin/jobs/{job.id}",
        f"/admin/jobs?state=ready&q={job.payload['uuid']}",
        f"/admin/tournaments/{t.id}",
    ]:
        response = client.get(path)
        assert response.status_code == 200, (path, text(response)[:500])
    assert f'href="/admin/jobs/{job.id}"' in text(
        client.get(f"/admin/jobs?state=ready&q={job.payload['uuid']}")
    )
    assert 'data-bracket="losers"' in text(client.get(f"/admin/tournaments/{t.id}"))


def test_pause_and_resume_a_queue(admin_client):
    Noop(n=1).dispatch()
    token = page_csrf(admin_client, "/admin/queues")
    refused = admin_client.post("/admin/queues/pause", data={"queue": "default"})
    assert refused.status_code == 400
    assert pauses.paused() == {}
    admin_client.post("/admin/queues/pause", data={"queue": "default", "csrf_token": token})
    assert set(pauses.paused()) == {"default"}
    page = text(admin_client.get("/admin/queues"))
    assert "Paused default" in page and "Resume default" in page
    (row,) = [
        q for q in admin_client.get("/admin/overview.json").get_json()["queues"] if q["queue"] == "default"
    ]
    assert row["paused_at"]
    # A queue with no job can be paused by name, and is listed while paused.
    admin_client.post("/admin/queues/pause", data={"queue": "mail", "csrf_token": token})
    assert 'data-queue="mail"' in text(admin_client.get("/admin/queues"))
    admin_client.post("/admin/queues/pause", data={"queue": "", "csrf_token": token})
    assert "Name the queue" in text(admin_client.get("/admin/queues"))
    admin_client.post("/admin/queues/resume", data={"queue": "default", "csrf_token": token})
    assert set(pauses.paused()) == {"mail"}


def test_cancel_a_delayed_job_asks_first(admin_client):
    jid = Noop(n=1).dispatch(delay=3600)
    token = page_csrf(admin_client, f"/admin/jobs/{jid}")
    assert "Cancel job" in text(admin_client.get(f"/admin/jobs/{jid}"))
    assert admin_client.post(f"/admin/jobs/{jid}/cancel").status_code == 400
    ask = admin_client.post(f"/admin/jobs/{jid}/cancel", data={"csrf_token": token})
    assert ask.status_code == 200 and 'value="yes"' in text(ask)
    assert JobRecord.select().count() == 1
    done = admin_client.post(f"/admin/jobs/{jid}/cancel", data={"confirmed": "yes", "csrf_token": token})
    assert done.status_code == 302
    assert JobRecord.select().count() == 0
    assert admin_client.post(f"/admin/jobs/{jid}/cancel", data={"csrf_token": token}).status_code == 404


def test_run_a_task_now(admin_client):
    token = page_csrf(admin_client, "/admin/schedule")
    assert admin_client.post("/admin/schedule/run", data={"task": "SendBulkEmailsJob"}).status_code == 400
    assert JobRecord.select().count() == 0
    admin_client.post("/admin/schedule/run", data={"task": "SendBulkEmailsJob", "csrf_token": token})
    (job,) = JobRecord.select()
    assert job.payload["job"] == "SendBulkEmailsJob"
    assert "Dispatched SendBulkEmailsJob as job" in text(admin_client.get("/admin/schedule"))
    admin_client.post("/admin/schedule/run", data={"task": "NoSuchJob", "csrf_token": token})
    assert "unknown task" in text(admin_client.get("/admin/schedule"))
    assert JobRecord.select().count() == 1
