"""Starting a tournament, on PostgreSQL and SQLite: the persisted bracket
matches the format's plan (rounds, matches, wiring), byes are decided and
their winners moved on, the first matches open with their deadlines and mail,
and every refusal writes nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import make_players
from tourno.accounts.models import Role, User
from tourno.mail.models import EmailOutbox
from tourno.tournaments import services
from tourno.tournaments.errors import InvalidState, PermissionDenied, ValidationError
from tourno.tournaments.formats import (
    Bracket,
    MatchKey,
    Standing,
    double_elimination,
    pair_next_round,
    round_robin,
    single_elimination,
)
from tourno.tournaments.models import (
    Match,
    MatchEvent,
    MatchEventType,
    MatchState,
    Participant,
    ParticipantStatus,
    ResultType,
    Round,
    RoundState,
    Tournament,
    TournamentState,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
FORMATS = ["single_elimination", "double_elimination", "round_robin", "swiss"]


def tournament_with(organizer: User, fmt: str, n: int, capacity: int = 16, **options) -> Tournament:
    t = services.create_tournament(
        organizer, name="Cup", game="Chess", format=fmt, capacity=capacity, **options
    )
    t = services.publish(t, organizer, now=NOW - dt.timedelta(hours=2))
    for i, user in enumerate(make_players(n)):
        services.register(t, user, now=NOW - dt.timedelta(hours=1, seconds=-i))
    return t


def plan_for(fmt: str, n: int):
    if fmt == "single_elimination":
        return single_elimination(n)
    if fmt == "double_elimination":
        return double_elimination(n)
    if fmt == "round_robin":
        return round_robin(n)
    return pair_next_round([Standing(s, 0.0, 0.0, 0.0, 0) for s in range(1, n + 1)], set(), set(), 1)


def key_of(match: Match, rounds: dict[int, Round]) -> MatchKey:
    return MatchKey(Bracket(match.bracket), rounds[match.round_id].number, match.position)


def snapshot() -> tuple:
    """Everything a refused start must leave untouched."""
    return (
        [tuple(r) for r in Tournament.select().order_by(Tournament.id).tuples()],
        [tuple(r) for r in Participant.select().order_by(Participant.id).tuples()],
        Round.select().count(),
        Match.select().count(),
        MatchEvent.select().count(),
        EmailOutbox.select().count(),
    )


def match_ready() -> list[EmailOutbox]:
    return list(EmailOutbox.select().where(EmailOutbox.template == "match_ready"))


# -- every format, small fields ------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_start_persists_the_plan(organizer, fmt, n):
    t = tournament_with(organizer, fmt, n)
    started = services.start_tournament(t, organizer, now=NOW)
    assert started.state == TournamentState.UNDERWAY and started.started_at == NOW

    plan = {m.key: m for m in plan_for(fmt, n)}
    rounds = {r.id: r for r in Round.select().where(Round.tournament == t.id)}
    matches = list(Match.select().where(Match.tournament == t.id))
    by_key = {key_of(m, rounds): m for m in matches}
    by_id = {m.id: m for m in matches}
    assert set(by_key) == set(plan)
    assert {(Bracket(r.bracket), r.number) for r in rounds.values()} == {(k.bracket, k.round) for k in plan}

    fresh = Tournament.get_by_id(t.id)
    assert fresh.state == TournamentState.UNDERWAY and fresh.current_round == 1
    assert fresh.participants_count == n and fresh.total_rounds >= 1
    if fmt == "round_robin":
        assert fresh.total_rounds == n - 1 + n % 2

    seeds = {p.seed: p.id for p in Participant.select().where(Participant.tournament == t.id)}
    assert sorted(seeds) == list(range(1, n + 1))

    # Wiring: the foreign keys point at the planned destinations.
    for key, pm in plan.items():
        row = by_key[key]
        for dest, fk, slot in (
            (pm.winner_to, row.winner_to_id, row.winner_to_slot),
            (pm.loser_to, row.loser_to_id, row.loser_to_slot),
        ):
            if dest is None:
                assert fk is None and slot is None
            else:
                assert key_of(by_id[fk], rounds) == dest.match and slot == dest.slot

    deadline = NOW + dt.timedelta(minutes=1440)
    opened = [m for m in matches if m.state == MatchState.OPEN]
    assert opened
    for m in matches:
        if m.result_type == ResultType.BYE and m.winner_id is not None:
            # A bye: complete, its player placed in the next match.
            assert m.state == MatchState.COMPLETE and m.completed_at == NOW
            assert m.winner_id in (m.player1_id, m.player2_id) and (m.player1_is_bye or m.player2_is_bye)
            if m.winner_to_id is not None:
                nxt = by_id[m.winner_to_id]
                assert (nxt.player1_id, nxt.player2_id)[m.winner_to_slot - 1] == m.winner_id
        if m.state == MatchState.OPEN:
            assert m.player1_id and m.player2_id and m.opened_at == NOW
            assert m.deadline_at == deadline and m.warn_at == deadline - dt.timedelta(minutes=60)
        else:
            assert m.deadline_at is None and m.warn_at is None
        if m.state == MatchState.PENDING:
            assert m.player1_id is None or m.player2_id is None or fmt == "round_robin"
    if fmt in ("round_robin", "swiss"):
        assert all(rounds[m.round_id].number == 1 for m in opened)
        assert len(opened) == n // 2
    byes = [m for m in matches if m.result_type == ResultType.BYE and m.winner_id]
    if fmt in ("single_elimination", "double_elimination"):
        size = 1 << (n - 1).bit_length()
        assert sorted(seeds_of(byes, seeds)) == list(range(1, size - n + 1))

    events = list(MatchEvent.select().where(MatchEvent.tournament == t.id))
    assert sorted(e.match_id for e in events) == sorted(m.id for m in opened)
    assert all(e.type == MatchEventType.OPENED and e.actor_user_id == organizer.id for e in events)
    mails = match_ready()
    assert len(mails) == 2 * len(opened)
    assert len({m.dedupe_key for m in mails}) == len(mails)
    players_opened = sorted(p for m in opened for p in (m.player1_id, m.player2_id))
    assert sorted(m.context["participant_id"] for m in mails) == players_opened

    # Starting again is refused and writes nothing.
    before = snapshot()
    with pytest.raises(InvalidState):
        services.start_tournament(t, organizer, now=NOW + dt.timedelta(minutes=1))
    assert snapshot() == before


def seeds_of(matches: list[Match], seeds: dict[int, int]) -> list[int]:
    seed_by_id = {pid: seed for seed, pid in seeds.items()}
    return [seed_by_id[m.winner_id] for m in matches]


def test_single_elimination_five_players_byes_and_round_two(organizer):
    t = tournament_with(organizer, "single_elimination", 5)
    services.start_tournament(t, organizer, now=NOW)
    seed = {p.seed: p.id for p in Participant.select()}
    rounds = {r.id: r for r in Round.select()}
    by_key = {key_of(m, rounds): m for m in Match.select()}
    w = Bracket.WINNERS
    # Seeds 1-3 have byes; 2 and 3 meet at once in round 2, seed 1 waits for 4 v 5.
    assert by_key[MatchKey(w, 1, 2)].state == MatchState.OPEN
    assert {by_key[MatchKey(w, 1, 2)].player1_id, by_key[MatchKey(w, 1, 2)].player2_id} == {seed[4], seed[5]}
    r2a, r2b = by_key[MatchKey(w, 2, 1)], by_key[MatchKey(w, 2, 2)]
    assert (r2a.state, r2a.player1_id, r2a.player2_id) == (MatchState.PENDING, seed[1], None)
    assert (r2b.state, r2b.player1_id, r2b.player2_id) == (MatchState.OPEN, seed[2], seed[3])
    round1 = next(r for r in rounds.values() if r.number == 1)
    assert round1.state == RoundState.OPEN and round1.name == "Quarter-finals"
    assert next(r for r in rounds.values() if r.number == 3).is_final
    assert Tournament.get_by_id(t.id).total_rounds == 3


def test_double_elimination_losers_of_byes_are_nobody(organizer):
    t = tournament_with(organizer, "double_elimination", 5)
    services.start_tournament(t, organizer, now=NOW)
    rounds = {r.id: r for r in Round.select()}
    by_key = {key_of(m, rounds): m for m in Match.select()}
    lb1 = by_key[MatchKey(Bracket.LOSERS, 1, 1)]
    assert lb1.state == MatchState.PENDING and lb1.player1_is_bye and lb1.player1_id is None
    # Both feeders were byes: the match is void and its winner slot is nobody too.
    void = by_key[MatchKey(Bracket.LOSERS, 1, 2)]
    assert void.state == MatchState.COMPLETE and void.winner_id is None
    nxt = Match.get_by_id(void.winner_to_id)
    assert (nxt.player1_is_bye, nxt.player2_is_bye)[void.winner_to_slot - 1]


def test_swiss_odd_field_gives_the_last_seed_a_bye(organizer):
    t = tournament_with(organizer, "swiss", 5, settings={"swiss_rounds": 4})
    services.start_tournament(t, organizer, now=NOW)
    bye = Match.get(Match.result_type == ResultType.BYE)
    assert bye.state == MatchState.COMPLETE and Participant.get_by_id(bye.winner_id).seed == 5
    assert Tournament.get_by_id(t.id).total_rounds == 4
    assert Round.select().count() == 1


def test_existing_seeds_come_first(organizer):
    t = tournament_with(organizer, "single_elimination", 4)
    entries = list(Participant.select().order_by(Participant.id))
    Participant.update(seed=7).where(Participant.id == entries[3].id).execute()
    Participant.update(seed=9).where(Participant.id == entries[2].id).execute()
    services.start_tournament(t, organizer, now=NOW)
    got = {p.id: p.seed for p in Participant.select()}
    assert [got[e.id] for e in entries] == [3, 4, 2, 1]


def test_no_warning_when_the_lead_is_not_shorter_than_the_deadline(organizer):
    t = tournament_with(organizer, "round_robin", 4, match_deadline_minutes=30, deadline_warning_minutes=30)
    services.start_tournament(t, organizer, now=NOW)
    opened = list(Match.select().where(Match.state == MatchState.OPEN))
    assert len(opened) == 2
    assert all(m.deadline_at == NOW + dt.timedelta(minutes=30) and m.warn_at is None for m in opened)


def test_check_in_no_shows_are_left_out(organizer):
    t = tournament_with(
        organizer,
        "single_elimination",
        4,
        check_in_enabled=True,
        starts_at=NOW + dt.timedelta(minutes=30),
        check_in_minutes=60,
    )
    users = list(User.select().where(User.role == Role.PLAYER).order_by(User.id))
    for user in users[:3]:
        services.check_in(t, user, now=NOW)
    services.start_tournament(t, organizer, now=NOW)
    absent = Participant.get(Participant.user == users[3].id)
    assert absent.status == ParticipantStatus.NO_SHOW and absent.seed is None
    fresh = Tournament.get_by_id(t.id)
    assert fresh.participants_count == 3 and fresh.check_ins_processed_at == NOW
    assert Match.select().where(Match.player1 == absent.id).count() == 0
    assert Match.select().where(Match.player2 == absent.id).count() == 0


# -- refusals --------------------------------------------------------------------------------


def test_only_the_organizer_or_an_admin_may_start(organizer):
    t = tournament_with(organizer, "single_elimination", 4)
    stranger = services.create_user("other@example.com", "Other", role=Role.ORGANIZER)
    player = User.get(User.email == "p0@example.com")
    before = snapshot()
    for actor in (stranger, player):
        with pytest.raises(PermissionDenied):
            services.start_tournament(t, actor, now=NOW)
    assert snapshot() == before
    admin = services.create_user("admin@example.com", "Admin", role=Role.ADMIN)
    assert services.start_tournament(t, admin, now=NOW).state == TournamentState.UNDERWAY


def test_a_draft_cannot_start(organizer):
    t = services.create_tournament(organizer, name="Cup", game="Go", format="swiss", capacity=8)
    before = snapshot()
    with pytest.raises(InvalidState):
        services.start_tournament(t, organizer, now=NOW)
    assert snapshot() == before


def test_too_few_participants(organizer):
    t = tournament_with(organizer, "round_robin", 3, min_participants=4)
    before = snapshot()
    with pytest.raises(ValidationError) as info:
        services.start_tournament(t, organizer, now=NOW)
    assert "participants" in info.value.errors
    assert snapshot() == before
    lonely = services.create_tournament(organizer, name="Solo", game="Go", format="swiss", capacity=4)
    lonely = services.publish(lonely, organizer, now=NOW - dt.timedelta(hours=2))
    User.insert(email="solo@example.com", display_name="Solo", role="player", created_at=NOW).execute()
    services.register(lonely, User.get(User.email == "solo@example.com"), now=NOW - dt.timedelta(hours=1))
    before = snapshot()
    with pytest.raises(ValidationError):
        services.start_tournament(lonely, organizer, now=NOW)
    assert snapshot() == before
