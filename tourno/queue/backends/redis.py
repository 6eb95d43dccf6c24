"""The Redis backend: the job queue in Redis, failed jobs in the database.

``TOURNO_REDIS_URL`` names the server and database; its optional ``prefix``
query parameter (``redis://host:6379/0?prefix=shop``) sets the key prefix,
``tourno`` by default, so that several installs can share one Redis database.

Key layout (``P`` is the key prefix; ids are the
decimal job id zero-padded to 16 digits, written ``ID`` below, so that the
members of a sorted set with equal scores sort by id):

``P:seq:job``, ``P:seq:worker``
    INCR counters: job ids and worker ids.
``P:job:ID``
    hash of one job: ``queue``, ``payload``, ``priority``, ``attempts``,
    ``state`` (ready | delayed | reserved | failing), ``owner`` (worker id
    while reserved), ``unique`` (its unique key, if any), ``at`` (when it
    became available, epoch ms).
``P:q:QUEUE:ready``
    sorted set of ready jobs, score = priority, member = ID: ``ZRANGE 0 n``
    gives priority order, then FIFO by id (the database's ``ORDER BY
    priority, id``), whatever the priority's size.
``P:q:QUEUE:delayed``
    sorted set of delayed jobs, score = available time (epoch ms). The claim
    moves the due ones into the ready set in the same script.
``P:queues``
    set of queue names ever pushed to (for ``stats``).
``P:reserved``
    sorted set of reserved jobs, score = lease expiry (epoch ms; +inf when
    the job has no timeout): the backstop of crash recovery.
``P:held:WID``
    set of the jobs worker ``WID`` holds (reserved or failing).
``P:workers``
    sorted set of worker ids, score = last heartbeat (epoch ms);
    ``P:worker:WID`` is the worker's hash (name, hostname, pid, ...).
``P:unique:KEY``
    the id of the pending job holding a unique key (``SET NX``, with
    ``unique_for`` as its TTL); cleared when that job completes, fails or is
    cleared.
``P:restart``
    the last restart signal (epoch ms).
``P:handed``
    sorted set of the uuids of jobs handed over from ``queue_outbox``,
    score = when (epoch ms): the hand-off's idempotency keys.
``P:notify``
    the pub/sub channel; messages name the queue that got ready jobs (push,
    release without delay, hand-back, rescue).

Every change that touches more than one key is one Lua script, so no job is
lost or runs twice between two commands; all times come from Redis ``TIME``,
never the client's clock. Scripts build key names from the prefix, so the
backend needs a single Redis server (not Redis Cluster).

Persistence: a Redis that loses its data loses the queue. Run it with
``appendonly yes`` and ``appendfsync everysec`` (at most a second of
dispatches lost on a power cut) or ``always``; never with persistence off.

Dispatch inside a database transaction (``db.atomic()``) goes through an
outbox table, ``queue_outbox``, so that the hand-off to Redis survives a
Redis outage: the jobs are written there inside the caller's transaction
(they commit or roll back with its rows, savepoints included) and, after the
outermost transaction commits (peewee's ``after_commit``), they are pushed to
Redis and their rows deleted. If Redis is unreachable then, the commit has
happened and stands: a warning is logged and the rows stay. Every Redis
worker's monitor relays leftover rows (``relay()``, with each rescue pass,
every heartbeat interval), oldest first, so the jobs run once Redis is back.
A hand-off is exactly-once: the rows are claimed (``DELETE ... RETURNING``,
``SKIP LOCKED`` on PostgreSQL, the write lock on SQLite) in a transaction
that stays open while the jobs are pushed and commits only after; the push
script records each job's uuid in ``P:handed`` and skips a uuid already
there, so a claim whose commit failed after its push is never pushed twice.
A uuid is forgotten once its row's deletion has committed (or after a day).
The job ids are taken from Redis at dispatch (``INCRBY``), so ``dispatch``
returns them as usual; if Redis is unreachable at dispatch, the job is
queued all the same, a warning is logged and ``dispatch`` returns None (the
id is taken when the job reaches Redis). For ``OUTAGE_HOLD`` seconds after
Redis was found unreachable, dispatches in transactions do not wait on it:
they return None and leave their jobs to the relay. A unique job handed off
gets an id even if its key turns out to be taken at push time; that id then
names no job. Outside a transaction, and in ``manual_commit()`` mode, jobs
are pushed at once, and an unreachable Redis raises to the caller.

Failing a job is two steps so it is never lost: the job is marked
``failing`` in Redis (guarded by its owner; rescue leaves it alone while the
worker lives), its ``failed_jobs`` row is upserted by uuid in the database,
and only then is the job deleted from Redis. Every step can be repeated, so
the worker's retry after a database outage is safe. If the worker dies in
between, the rescue puts the job back in its queue (it runs again).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import urllib.parse
from typing import Any

import peewee
import redis as redislib

from tourno.db import (
    SQLITE_TIME_FORMAT,
    UTC,
    DatabaseUnavailable,
    database,
    discard_connection,
    is_postgres,
    open_connection,
    parse_timestamp,
)
from tourno.queue.backends.base import ClaimedJob, QueueBackend, QueueStats, WorkerInfo
from tourno.queue.job import PendingJob

log = logging.getLogger(__name__)

#: Like the database backend: the lease is timeout + this margin.
LEASE_MARGIN = 120.0
#: Dead workers' entries are kept this long for ``queue status``, then pruned.
WORKER_TTL = 3600
#: Delayed jobs moved into the ready set per claim, at most.
MIGRATE_BATCH = 1000
#: Jobs per push script call.
PUSH_CHUNK = 5000
#: Rows per INSERT into queue_outbox (SQLite binds nine parameters a row).
OUTBOX_CHUNK = 1000
#: Outbox rows claimed per hand-off transaction, and how many such batches
#: one relay pass sends at most (the rest waits for the next pass).
HANDOFF_BATCH = 1000
RELAY_BATCHES = 20
#: Seconds a handed-over uuid is remembered when its row's deletion was never
#: confirmed (normally it is forgotten at once).
HANDED_TTL = 86400
#: After Redis was found unreachable inside a transaction, dispatches leave
#: their jobs to the relay for this many seconds instead of waiting on Redis.
OUTAGE_HOLD = 5.0

_LIB = r"""
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function jkey(id) return P .. ':job:' .. id end
local function ready_key(q) return P .. ':q:' .. q .. ':ready' end
local function delayed_key(q) return P .. ':q:' .. q .. ':delayed' end
-- put a job (state reserved/failing) back in its queue; returns the queue
local function unreserve(id, owner, at)
  local k = jkey(id)
  local q = redis.call('HGET', k, 'queue')
  redis.call('ZREM', P .. ':reserved', id)
  if owner and owner ~= '' then redis.call('SREM', P .. ':held:' .. owner, id) end
  if not q then return false end
  local pr = tonumber(redis.call('HGET', k, 'priority')) or 0
  redis.call('HSET', k, 'state', 'ready', 'owner', '', 'at', at)
  redis.call('ZADD', ready_key(q), pr, id)
  return q
end
local function delete_job(id, owner)
  local k = jkey(id)
  local u = redis.call('HGET', k, 'unique')
  if u and u ~= '' then
    local uk = P .. ':unique:' .. u
    if redis.call('GET', uk) == id then redis.call('DEL', uk) end
  end
  redis.call('DEL', k)
  redis.call('ZREM', P .. ':reserved', id)
  redis.call('SREM', P .. ':held:' .. owner, id)
end
local function owned(id, worker)
  return redis.call('HGET', jkey(id), 'owner') == worker
end
local function complete(worker, first, last)
  local n = 0
  for i = first, last do
    local id = ARGV[i]
    if owned(id, worker) and redis.call('HGET', jkey(id), 'state') == 'reserved' then
      delete_job(id, worker)
      n = n + 1
    end
  end
  return n
end
"""

# ARGV: P, n, handed ('1': a hand-off from queue_outbox, idempotent by uuid),
# then 8 per job: id ('' = allocate here), uuid, queue, payload, priority,
# delay_ms, unique_key, unique_for_ms.
# Returns one number per job: its id (pushed), 0 (unique key taken) or -1
# (its uuid was handed over before: not pushed again).
_PUSH = r"""
local n, handed = tonumber(ARGV[2]), ARGV[3] == '1'
local now = now_ms()
local need = 0
for i = 0, n - 1 do
  if ARGV[4 + i * 8] == '' then need = need + 1 end
end
local next_id = 0
if need > 0 then next_id = redis.call('INCRBY', P .. ':seq:job', need) - need + 1 end
local hk = P .. ':handed'
if handed then redis.call('ZREMRANGEBYSCORE', hk, '-inf', now - %(handed_ttl)d) end
local out = {}
local woke = {}
for i = 0, n - 1 do
  local b = 4 + i * 8
  local num = tonumber(ARGV[b])
  if not num then
    num = next_id
    next_id = next_id + 1
  end
  local uuid, q, payload, pr, delay = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], tonumber(ARGV[b + 5])
  local ukey, ufor = ARGV[b + 6], tonumber(ARGV[b + 7])
  local id = string.format('%016d', num)
  local result = num
  if handed and redis.call('ZSCORE', hk, uuid) then
    result = -1
  else
    if handed then redis.call('ZADD', hk, now, uuid) end
    if ukey ~= '' then
      local uk = P .. ':unique:' .. ukey
      local holder = redis.call('GET', uk)
      if holder and redis.call('EXISTS', jkey(holder)) == 1 then
        result = 0
      elseif ufor > 0 then
        redis.call('SET', uk, id, 'PX', ufor)
      else
        redis.call('SET', uk, id)
      end
    end
  end
  if result > 0 then
    redis.call('SADD', P .. ':queues', q)
    local k = jkey(id)
    if delay > 0 then
      redis.call('HSET', k, 'queue', q, 'payload', payload, 'priority', pr, 'attempts', 0,
                 'state', 'delayed', 'owner', '', 'unique', ukey, 'at', now + delay)
      redis.call('ZADD', delayed_key(q), now + delay, id)
    else
      redis.call('HSET', k, 'queue', q, 'payload', payload, 'priority', pr, 'attempts', 0,
                 'state', 'ready', 'owner', '', 'unique', ukey, 'at', now)
      redis.call('ZADD', ready_key(q), pr, id)
      woke[q] = true
    end
  end
  out[#out + 1] = result
end
for q, _ in pairs(woke) do redis.call('PUBLISH', P .. ':notify', q) end
return out
""".replace("%(handed_ttl)d", str(HANDED_TTL * 1000))

# ARGV: P, worker, queue, limit, default_timeout_ms, margin_ms, done ids...
_CLAIM = r"""
local worker, q, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local default_timeout, margin = tonumber(ARGV[5]), tonumber(ARGV[6])
complete(worker, 7, #ARGV)
local now = now_ms()
local dk = delayed_key(q)
local due = redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, %(migrate)d)
for _, id in ipairs(due) do
  redis.call('ZREM', dk, id)
  local k = jkey(id)
  local pr = redis.call('HGET', k, 'priority')
  if pr then
    redis.call('HSET', k, 'state', 'ready')
    redis.call('ZADD', ready_key(q), tonumber(pr), id)
  end
end
local rk = ready_key(q)
local ids = redis.call('ZRANGE', rk, 0, limit - 1)
local out = {}
for i, id in ipairs(ids) do
  redis.call('ZREM', rk, id)
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'payload', 'attempts', 'priority')
  if f[1] then
    local attempts = tonumber(f[2]) or 0
    if i == 1 then attempts = attempts + 1 end
    local timeout = default_timeout
    local okj, decoded = pcall(cjson.decode, f[1])
    if okj and type(decoded) == 'table' and type(decoded['timeout']) == 'number' then
      timeout = decoded['timeout'] * 1000
      if timeout > 1e11 then timeout = 1e11 end
    end
    local lease = '+inf'
    if timeout > 0 then lease = now + timeout + margin end
    redis.call('HSET', k, 'state', 'reserved', 'owner', worker, 'attempts', attempts)
    redis.call('ZADD', P .. ':reserved', lease, id)
    redis.call('SADD', P .. ':held:' .. worker, id)
    out[#out + 1] = {id, f[1], attempts, f[3]}
  end
end
return out
""".replace("%(migrate)d", str(MIGRATE_BATCH))

# ARGV: P, worker, ids...
_COMPLETE = "return complete(ARGV[2], 3, #ARGV)"

# ARGV: P, worker, id, delay_ms, attempts ('' = keep)
_RELEASE = r"""
local worker, id, delay, attempts = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local k = jkey(id)
if not owned(id, worker) or redis.call('HGET', k, 'state') ~= 'reserved' then return 0 end
if attempts then
  local cur = tonumber(redis.call('HGET', k, 'attempts')) or 0
  if attempts > cur then redis.call('HSET', k, 'attempts', attempts) end
end
local now = now_ms()
if delay > 0 then
  local q = redis.call('HGET', k, 'queue')
  redis.call('ZREM', P .. ':reserved', id)
  redis.call('SREM', P .. ':held:' .. worker, id)
  redis.call('HSET', k, 'state', 'delayed', 'owner', '', 'at', now + delay)
  redis.call('ZADD', delayed_key(q), now + delay, id)
else
  local q = unreserve(id, worker, now)
  redis.call('PUBLISH', P .. ':notify', q)
end
return 1
"""

# ARGV: P, worker, id, attempts
_COUNT_ATTEMPT = r"""
local worker, id, attempts = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not owned(id, worker) or redis.call('HGET', jkey(id), 'state') ~= 'reserved' then return 0 end
local cur = tonumber(redis.call('HGET', jkey(id), 'attempts')) or 0
if attempts > cur then redis.call('HSET', jkey(id), 'attempts', attempts) end
return 1
"""

# ARGV: P, worker, ids...
_HAND_BACK = r"""
local worker = ARGV[2]
local now = now_ms()
local n = 0
local woke = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if owned(id, worker) and redis.call('HGET', jkey(id), 'state') == 'reserved' then
    local q = unreserve(id, worker, now)
    if q then woke[q] = true end
    n = n + 1
  end
end
for q, _ in pairs(woke) do redis.call('PUBLISH', P .. ':notify', q) end
return n
"""

# Step 1 of fail: reserved (or already failing) -> failing; returns the queue.
# ARGV: P, worker, id
_FAIL_BEGIN = r"""
local worker, id = ARGV[2], ARGV[3]
local k = jkey(id)
if not owned(id, worker) then return false end
local state = redis.call('HGET', k, 'state')
if state ~= 'reserved' and state ~= 'failing' then return false end
redis.call('HSET', k, 'state', 'failing')
redis.call('ZREM', P .. ':reserved', id)
return redis.call('HGET', k, 'queue')
"""

# Step 2 of fail: the failed_jobs row is written; delete the job.
_FAIL_END = r"""
local worker, id = ARGV[2], ARGV[3]
if not owned(id, worker) or redis.call('HGET', jkey(id), 'state') ~= 'failing' then return 0 end
delete_job(id, worker)
return 1
"""

# ARGV: P, stale_ms, ttl_ms. Returns {id, former owner} pairs.
_RESCUE = r"""
local stale, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {}
local woke = {}
local wk = P .. ':workers'
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', wk, '-inf', now - stale)) do
  local hk = P .. ':held:' .. wid
  for _, id in ipairs(redis.call('SMEMBERS', hk)) do
    if owned(id, wid) then
      local q = unreserve(id, wid, now)
      if q then woke[q] = true end
      out[#out + 1] = {id, wid}
    else
      redis.call('SREM', hk, id)
    end
  end
  local beat = tonumber(redis.call('ZSCORE', wk, wid))
  if beat and beat < now - ttl then
    redis.call('ZREM', wk, wid)
    redis.call('DEL', P .. ':worker:' .. wid, hk)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':reserved', '-inf', now)) do
  local owner = redis.call('HGET', jkey(id), 'owner') or ''
  local q = unreserve(id, owner, now)
  if q then woke[q] = true end
  out[#out + 1] = {id, owner}
end
for q, _ in pairs(woke) do redis.call('PUBLISH', P .. ':notify', q) end
return out
"""

# ARGV: P, worker, fields (name, hostname, pid, queues, started_at, current_job_id, jobs_done),
# register ('1' = allocate a worker id). Returns {worker id, now ms, restart ms or false}.
_HEARTBEAT = r"""
local now = now_ms()
local wid = ARGV[2]
if ARGV[10] == '1' then wid = tostring(redis.call('INCR', P .. ':seq:worker')) end
local started = ARGV[7]
if started == '' then started = now end
redis.call('HSET', P .. ':worker:' .. wid, 'name', ARGV[3], 'hostname', ARGV[4], 'pid', ARGV[5],
           'queues', ARGV[6], 'started_at', started, 'current_job_id', ARGV[8], 'jobs_done', ARGV[9],
           'heartbeat_at', now)
redis.call('ZADD', P .. ':workers', now, wid)
return {wid, tostring(now), redis.call('GET', P .. ':restart')}
"""

# ARGV: P, worker. Held jobs left behind are rescued at once.
_UNREGISTER = r"""
local wid = ARGV[2]
if redis.call('SCARD', P .. ':held:' .. wid) > 0 then
  redis.call('ZADD', P .. ':workers', 0, wid)
else
  redis.call('ZREM', P .. ':workers', wid)
  redis.call('DEL', P .. ':worker:' .. wid)
end
return 1
"""

# ARGV: P, queues... Deletes ready and delayed jobs; returns how many.
_CLEAR = r"""
local n = 0
for i = 2, #ARGV do
  for _, key in ipairs({ready_key(ARGV[i]), delayed_key(ARGV[i])}) do
    for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      local u = redis.call('HGET', jkey(id), 'unique')
      if u and u ~= '' and redis.call('GET', P .. ':unique:' .. u) == id then
        redis.call('DEL', P .. ':unique:' .. u)
      end
      redis.call('DEL', jkey(id))
      n = n + 1
    end
    redis.call('DEL', key)
  end
end
return n
"""

# ARGV: P. Per queue: {queue, ready, delayed, reserved, oldest ready ms or false}, now.
# The oldest ready time is looked for among the first 1000 ready jobs (in
# claim order), so it is exact unless priorities reorder a long queue.
_STATS = r"""
local now = now_ms()
local reserved = {}
for _, id in ipairs(redis.call('ZRANGE', P .. ':reserved', 0, -1)) do
  local q = redis.call('HGET', jkey(id), 'queue')
  if q then reserved[q] = (reserved[q] or 0) + 1 end
end
local out = {}
local queues = redis.call('SMEMBERS', P .. ':queues')
table.sort(queues)
for _, q in ipairs(queues) do
  local due = redis.call('ZCOUNT', delayed_key(q), '-inf', now)
  local later = redis.call('ZCOUNT', delayed_key(q), '(' .. now, '+inf')
  local ready = redis.call('ZCARD', ready_key(q)) + due
  local oldest = false
  for _, id in ipairs(redis.call('ZRANGE', ready_key(q), 0, 999)) do
    local at = tonumber(redis.call('HGET', jkey(id), 'at'))
    if at and (not oldest or at < oldest) then oldest = at end
  end
  local first_due = redis.call('ZRANGEBYSCORE', delayed_key(q), '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if first_due[2] then
    local at = tonumber(first_due[2])
    if not oldest or at < oldest then oldest = at end
  end
  if ready + later + (reserved[q] or 0) > 0 then
    out[#out + 1] = {q, ready, later, reserved[q] or 0, oldest and tostring(oldest) or false}
  end
end
return out
"""

_SIGNAL_RESTART = r"""
local now = now_ms()
redis.call('SET', P .. ':restart', now)
return tostring(now)
"""


def _split_prefix(url: str) -> tuple[str, str | None]:
    """The URL without its ``prefix`` query parameter, and that parameter."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "prefix"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), prefix or None


def _pad(job_id: Any) -> str:
    return f"{int(job_id):016d}"


def _ms_to_dt(value: Any) -> dt.datetime | None:
    if value is None or value is False or value == b"" or value == "":
        return None
    return dt.datetime.fromtimestamp(int(float(value)) / 1000, UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _db_time(value: dt.datetime) -> Any:
    """A UTC instant as the database takes it (text on SQLite)."""
    return value if is_postgres() else value.strftime(SQLITE_TIME_FORMAT)


#: The columns a hand-off reads back from ``queue_outbox``.
_OUTBOX_COLUMNS = "id, uuid, job_id, queue, payload, priority, available_at, unique_key, unique_for"
#: Database errors a hand-off survives: its rows stay for the relay.
_DB_ERRORS = (peewee.OperationalError, peewee.InterfaceError, DatabaseUnavailable)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Handoff:
    """The outbox rows written in one database transaction, handed to Redis
    after it commits (a peewee commit callback, dropped on rollback)."""

    def __init__(self, backend: RedisBackend, db: Any) -> None:
        self.backend = backend
        self.db = db
        self.outbox_ids: list[int] = []

    def __call__(self) -> None:
        ids, self.outbox_ids = self.outbox_ids, []
        if not ids:
            return
        if self.db.transaction_depth() > 0 or self.backend._in_outage():
            # A commit() inside an atomic block (the next transaction has not
            # begun, so there is none to claim in), or Redis was just found
            # down: the relay sends them.
            return
        try:
            for start in range(0, len(ids), HANDOFF_BATCH):
                self.backend._hand_off(ids[start : start + HANDOFF_BATCH])
        except redislib.RedisError as exc:
            outage = isinstance(exc, self.backend.connection_errors)
            if outage:
                self.backend._outage_seen()
            log.warning(
                "%s (%s): %d job(s) of the committed transaction wait in queue_outbox; "
                "a Redis worker pushes them once Redis takes them",
                "Redis is unreachable" if outage else "Redis refused the push",
                _first_line(exc),
                len(ids),
            )
        except _DB_ERRORS as exc:
            log.warning(
                "could not hand %d job(s) from queue_outbox to Redis (%s); a Redis worker will",
                len(ids),
                _first_line(exc),
            )


class RedisBackend(QueueBackend):
    connection_name = "redis"
    connection_errors = (redislib.ConnectionError, redislib.TimeoutError)

    def __init__(self, url: str, prefix: str | None = None) -> None:
        self.url, url_prefix = _split_prefix(url)
        self.prefix = prefix or url_prefix or "tourno"
        self._local = threading.local()
        self._outage_until = 0.0
        self._relay_failing = False
        self._scripts: dict[str, Any] = {}
        scratch = redislib.Redis()  # only to build Script objects; never connects
        for name, body in (
            ("push", _PUSH),
            ("claim", _CLAIM),
            ("complete", _COMPLETE),
            ("release", _RELEASE),
            ("count_attempt", _COUNT_ATTEMPT),
            ("hand_back", _HAND_BACK),
            ("fail_begin", _FAIL_BEGIN),
            ("fail_end", _FAIL_END),
            ("rescue", _RESCUE),
            ("heartbeat", _HEARTBEAT),
            ("unregister", _UNREGISTER),
            ("clear", _CLEAR),
            ("stats", _STATS),
            ("signal_restart", _SIGNAL_RESTART),
        ):
            self._scripts[name] = scratch.register_script(_LIB + body)

    # -- connections -------------------------------------------------------------

    def client(self) -> redislib.Redis:
        """This thread's client."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = redislib.Redis.from_url(
                self.url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
            )
            self._local.client = client
        return client

    def ping(self) -> None:
        self.client().ping()

    def _run(self, name: str, *args: Any) -> Any:
        return self._scripts[name](keys=[], args=[self.prefix, *args], client=self.client())

    def close_thread_connection(self) -> None:
        for attr in ("pubsub", "client"):
            obj = getattr(self._local, attr, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001, S110 - closing a broken connection
                    pass
                setattr(self._local, attr, None)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- producer ----------------------------------------------------------------------

    def push(self, jobs: list[PendingJob]) -> list[Any]:
        if not jobs:
            return []
        db = database.obj
        if db is not None and db.in_transaction():
            from peewee import _manual

            if not isinstance(db.top_transaction(), _manual):
                return self._push_in_transaction(db, jobs)
        return self._push_now(jobs)

    def _push_in_transaction(self, db: Any, jobs: list[PendingJob]) -> list[Any]:
        """Write ``jobs`` to queue_outbox inside the open transaction; they
        reach Redis after it commits (``_Handoff``) or from the relay."""
        first = self._take_ids(len(jobs))
        now = dt.datetime.now(UTC)
        handoff = self._handoff(db)
        for start in range(0, len(jobs), OUTBOX_CHUNK):
            chunk = jobs[start : start + OUTBOX_CHUNK]
            params: list[Any] = []
            for i, p in enumerate(chunk, start):
                params += [
                    p.uuid,
                    None if first is None else first + i,
                    p.queue,
                    p.payload_json,
                    int(p.priority),
                    _db_time(now + dt.timedelta(seconds=p.delay)),
                    p.unique_key,
                    float(p.unique_for) if p.unique_key and p.unique_for else None,
                    _db_time(now),
                ]
            mark = db.param
            values = ",".join([f"({', '.join([mark] * 9)})"] * len(chunk))
            rows = db.execute_sql(
                "INSERT INTO queue_outbox (uuid, job_id, queue, payload, priority, available_at, "
                f"unique_key, unique_for, created_at) VALUES {values} RETURNING id",
                params,
            ).fetchall()
            handoff.outbox_ids += [r[0] for r in rows]
        if first is None:
            # Queued all the same (None would read as "a unique job was already
            # pending"): the uuid stands in until the relay hands it over.
            return [p.uuid for p in jobs]
        return list(range(first, first + len(jobs)))

    def _take_ids(self, n: int) -> int | None:
        """The first of ``n`` job ids from Redis, or None if Redis is unreachable."""
        if self._in_outage():
            return None
        try:
            return self.client().incrby(self.key("seq", "job"), n) - n + 1
        except self.connection_errors as exc:
            self._outage_seen()
            log.warning(
                "Redis is unreachable (%s): %d job(s) dispatched in this transaction are kept in "
                "queue_outbox and pushed once Redis is back",
                exc,
                n,
            )
            return None

    def _in_outage(self) -> bool:
        return time.monotonic() < self._outage_until

    def _outage_seen(self) -> None:
        self._outage_until = time.monotonic() + OUTAGE_HOLD
        self.close_thread_connection()

    def _handoff(self, db: Any) -> _Handoff:
        for fn in db._state.commit_callbacks:  # peewee's per-thread list, cleared on rollback
            if isinstance(fn, _Handoff) and fn.backend is self:
                return fn
        handoff = _Handoff(self, db)
        db.after_commit(handoff)
        return handoff

    # -- the hand-off from queue_outbox ---------------------------------------------------

    # Claiming deletes the rows inside a transaction that stays open while
    # they are pushed: a concurrent hand-off skips them (SKIP LOCKED), and a
    # failed push rolls the deletion back. The after-commit hand-off claims the
    # rows its transaction wrote; the relay claims the oldest.
    _CLAIM_IDS_PG = (
        "DELETE FROM queue_outbox WHERE id IN (SELECT id FROM queue_outbox WHERE id = ANY(%s) "
        f"FOR UPDATE SKIP LOCKED) RETURNING {_OUTBOX_COLUMNS}"
    )
    _CLAIM_OLDEST_PG = (
        "DELETE FROM queue_outbox WHERE id IN (SELECT id FROM queue_outbox ORDER BY id LIMIT %s "
        f"FOR UPDATE SKIP LOCKED) RETURNING {_OUTBOX_COLUMNS}"
    )
    _CLAIM_OLDEST_SQLITE = (
        "DELETE FROM queue_outbox WHERE id IN (SELECT id FROM queue_outbox ORDER BY id LIMIT ?) "
        f"RETURNING {_OUTBOX_COLUMNS}"
    )

    def _hand_off(self, outbox_ids: list[int] | None) -> int:
        """Claim outbox rows (these ids, or the oldest batch), push them, and
        commit their deletion; returns how many rows were claimed."""
        if database.is_closed():
            open_connection()
        postgres = is_postgres()
        with database.atomic() if postgres else database.atomic("IMMEDIATE"):
            if outbox_ids is None:
                if postgres:
                    sql, params = self._CLAIM_OLDEST_PG, (HANDOFF_BATCH,)
                else:
                    sql, params = self._CLAIM_OLDEST_SQLITE, (HANDOFF_BATCH,)
            elif postgres:
                sql, params = self._CLAIM_IDS_PG, (list(outbox_ids),)
            else:
                marks = ",".join("?" * len(outbox_ids))
                sql = f"DELETE FROM queue_outbox WHERE id IN ({marks}) RETURNING {_OUTBOX_COLUMNS}"
                params = tuple(outbox_ids)
            rows = sorted(database.execute_sql(sql, params).fetchall())
            if not rows:
                return 0
            now = dt.datetime.now(UTC)
            jobs = []
            for _, uuid, _, queue, payload, priority, available_at, unique_key, unique_for in rows:
                delay = (parse_timestamp(available_at) - now).total_seconds()
                jobs.append(
                    PendingJob(queue, uuid, payload, priority, max(delay, 0.0), unique_key, unique_for)
                )
            self._push_now(jobs, [r[2] for r in rows], handed=True)
        # The deletions are committed: those uuids can never be pushed again.
        try:
            self.client().zrem(self.key("handed"), *[r[1] for r in rows])
        except self.connection_errors:
            pass  # they expire on their own
        return len(rows)

    def relay(self) -> int:
        """Push what is left in queue_outbox (jobs whose transaction committed
        while Redis was unreachable, or whose process died before handing them
        over), oldest first; returns how many rows were handed over."""
        if database.is_closed():
            open_connection()
        # A read first, so that an empty outbox costs no write lock (SQLite).
        if not database.execute_sql("SELECT 1 FROM queue_outbox LIMIT 1").fetchall():
            return 0
        total = 0
        for _ in range(RELAY_BATCHES):
            n = self._hand_off(None)
            total += n
            if n < HANDOFF_BATCH:
                break
        if total:
            log.info("relayed %d job(s) from queue_outbox to Redis", total)
        return total

    def _push_now(
        self, jobs: list[PendingJob], ids: list[Any] | None = None, *, handed: bool = False
    ) -> list[Any]:
        """Push ``jobs`` with these ids (None: allocate); with ``handed``,
        each job's uuid is pushed at most once."""
        out: list[Any] = []
        for start in range(0, len(jobs), PUSH_CHUNK):
            chunk = jobs[start : start + PUSH_CHUNK]
            args: list[Any] = [len(chunk), "1" if handed else ""]
            for i, p in enumerate(chunk, start):
                given = None if ids is None else ids[i]
                args += [
                    "" if given is None else int(given),
                    p.uuid,
                    p.queue,
                    p.payload_json,
                    int(p.priority),
                    int(round(p.delay * 1000)),
                    p.unique_key or "",
                    int(round(float(p.unique_for) * 1000)) if p.unique_key and p.unique_for else 0,
                ]
            out += [int(r) if int(r) > 0 else None for r in self._run("push", *args)]
        return out

    # -- worker: claim and finish --------------------------------------------------------

    def claim(self, worker_id, queue, limit, done, default_timeout):
        rows = self._run(
            "claim",
            worker_id,
            queue,
            int(limit),
            int(float(default_timeout) * 1000),
            int(LEASE_MARGIN * 1000),
            *[_pad(i) for i in done],
        )
        return [ClaimedJob(int(r[0]), queue, _text(r[1]), int(r[2]), int(float(r[3]))) for r in rows]

    def complete(self, worker_id, ids):
        if not ids:
            return 0
        return int(self._run("complete", worker_id, *[_pad(i) for i in ids]))

    def release(self, worker_id, job_id, delay, attempts=None):
        ms = int(round(float(delay) * 1000))
        return bool(self._run("release", worker_id, _pad(job_id), ms, "" if attempts is None else attempts))

    def count_attempt(self, worker_id, job_id, attempts):
        return bool(self._run("count_attempt", worker_id, _pad(job_id), int(attempts)))

    def hand_back(self, worker_id, ids):
        if not ids:
            return 0
        return int(self._run("hand_back", worker_id, *[_pad(i) for i in ids]))

    def fail(self, worker_id, job, uuid, exception):
        queue = self._run("fail_begin", worker_id, _pad(job.id))
        if not queue:
            return False
        self._insert_failed(uuid, _text(queue), job.payload, exception)
        self._run("fail_end", worker_id, _pad(job.id))
        return True

    def _insert_failed(self, uuid: str, queue: str, payload: str, exception: str) -> None:
        """The database backend's upsert: failing the same uuid again updates it."""
        if database.is_closed():
            open_connection()
        now = dt.datetime.now(UTC)
        if is_postgres():
            mark, failed_at = "%s", now
        else:
            mark, failed_at = "?", now.strftime(SQLITE_TIME_FORMAT)
        database.execute_sql(
            "INSERT INTO failed_jobs (uuid, connection, queue, payload, exception, failed_at) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, {mark}) ON CONFLICT (uuid) DO UPDATE SET "
            "connection = excluded.connection, queue = excluded.queue, payload = excluded.payload, "
            "exception = excluded.exception, failed_at = excluded.failed_at",
            (uuid, self.connection_name, queue, payload, exception, failed_at),
        )

    # -- worker: liveness --------------------------------------------------------------

    def register_worker(self, name, hostname, pid, queues):
        wid, now, _ = self._run("heartbeat", "", name, hostname, pid, ",".join(queues), "", "", 0, "1")
        return int(wid), _ms_to_dt(now)

    def heartbeat(self, worker_id, info):
        started = info.get("started_at")
        started_ms = int(started.timestamp() * 1000) if isinstance(started, dt.datetime) else ""
        current = info.get("current_job_id")
        _, _, restart = self._run(
            "heartbeat",
            worker_id,
            info["name"],
            info["hostname"],
            info["pid"],
            info["queues"],
            started_ms,
            "" if current is None else current,
            info.get("jobs_done") or 0,
            "0",
        )
        return _ms_to_dt(restart) if restart else None

    def unregister_worker(self, worker_id):
        self._run("unregister", worker_id)

    def rescue(self, stale_after):
        # Every worker's monitor calls this each heartbeat interval: the
        # relay of leftover hand-offs rides along.
        # A database outage must not stop the rescue (Redis state only).
        try:
            self.relay()
            self._relay_failing = False
        except _DB_ERRORS as exc:
            if not self._relay_failing:
                log.warning("could not relay queue_outbox to Redis: %s", _first_line(exc))
            self._relay_failing = True
            discard_connection()
        rows = self._run("rescue", int(float(stale_after) * 1000), WORKER_TTL * 1000)
        out = []
        for job_id, owner in rows:
            owner = _text(owner)
            out.append((int(job_id), int(owner) if owner.isdigit() else None))
        return out

    # -- notifications -----------------------------------------------------------------

    def listen(self):
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            pubsub = self.client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.key("notify"))
            self._local.pubsub = pubsub

    def wait_for_notifications(self, timeout):
        import time

        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            time.sleep(max(timeout, 0))
            return set()
        queues: set[str] = set()
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            left = deadline - time.monotonic()
            msg = pubsub.get_message(timeout=max(left, 0) if not queues else 0)
            if msg is not None and msg.get("type") == "message":
                queues.add(_text(msg["data"]))
                continue
            if queues or left <= 0:
                return queues

    # -- operations ----------------------------------------------------------------------

    def stats(self):
        return [
            QueueStats(_text(q), int(r), int(d), int(res), _ms_to_dt(oldest))
            for q, r, d, res, oldest in self._run("stats")
        ]

    def workers(self, stale_after):
        client = self.client()
        secs, micros = client.time()
        cutoff = secs * 1000 + micros // 1000 - int(float(stale_after) * 1000)
        ids = [_text(w) for w in client.zrangebyscore(self.key("workers"), f"({cutoff}", "+inf")]
        pipe = client.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(self.key("worker", wid))
        out = []
        for wid, raw in zip(ids, pipe.execute(), strict=True):
            if not raw:
                continue
            h = {_text(k): _text(v) for k, v in raw.items()}
            current = h.get("current_job_id") or None
            out.append(
                WorkerInfo(
                    id=int(wid),
                    name=h.get("name", ""),
                    hostname=h.get("hostname", ""),
                    pid=int(h.get("pid") or 0),
                    queues=h.get("queues", ""),
                    started_at=_ms_to_dt(h.get("started_at")),
                    heartbeat_at=_ms_to_dt(h.get("heartbeat_at")),
                    current_job_id=int(current) if current and current.isdigit() else current,
                    jobs_done=int(h.get("jobs_done") or 0),
                )
            )
        out.sort(key=lambda w: (w.hostname, w.name, w.id))
        return out

    def clear(self, queue):
        if queue is None:
            queues = sorted(_text(q) for q in self.client().smembers(self.key("queues")))
        else:
            queues = [queue]
        if not queues:
            return 0
        return int(self._run("clear", *queues))

    def signal_restart(self):
        return _ms_to_dt(self._run("signal_restart"))
