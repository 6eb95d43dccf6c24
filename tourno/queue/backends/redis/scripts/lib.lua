-- The library every script starts with (the backend prepends it): ARGV[1] is
-- the key prefix P; times come from Redis TIME, in epoch milliseconds.
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function jkey(id) return P .. ':job:' .. id end
local function ready_key(q) return P .. ':q:' .. q .. ':ready' end
local function delayed_key(q) return P .. ':q:' .. q .. ':delayed' end
-- announce a delayed job: "QUEUE EPOCH_SECONDS" on P:due (base.HeardDue)
local function publish_due(q, at_ms)
  redis.call('PUBLISH', P .. ':due', q .. ' ' .. string.format('%.3f', at_ms / 1000))
end
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
-- Add the metric rows in ARGV[first..] to the minute hashes and the totals
-- hash: ARGV[first] is the minute hashes' lifetime (seconds), then 12 values
-- a row: minute (epoch s), field (the JSON [queue, job]), then the columns
-- succeeded, failed, released, snoozed, cancelled, runs (whole numbers),
-- runtime_sum, runtime_max, wait_sum, wait_max. A hash field is "FIELD|column".
local METRIC_COLUMNS = {'succeeded', 'failed', 'released', 'snoozed', 'cancelled', 'runs',
                        'runtime_sum', 'runtime_max', 'wait_sum', 'wait_max'}
local function bump_max(key, field, value)
  local cur = tonumber(redis.call('HGET', key, field))
  if not cur or value > cur then redis.call('HSET', key, field, value) end
end
local function record_metrics(first)
  if first > #ARGV then return end
  local ttl = tonumber(ARGV[first])
  local total = P .. ':metrics:total'
  local i = first + 1
  while i + 11 <= #ARGV do
    local mk = P .. ':metrics:m:' .. ARGV[i]
    local field = ARGV[i + 1]
    for c = 1, 10 do
      local name, raw = METRIC_COLUMNS[c], ARGV[i + 1 + c]
      local value = tonumber(raw)
      if value and value > 0 then
        local f = field .. '|' .. name
        if c <= 6 then
          redis.call('HINCRBY', mk, f, value)
          redis.call('HINCRBY', total, f, value)
        elseif c == 7 or c == 9 then
          redis.call('HINCRBYFLOAT', mk, f, raw)
          redis.call('HINCRBYFLOAT', total, f, raw)
        else
          bump_max(mk, f, value)
          bump_max(total, f, value)
        end
      end
    end
    redis.call('EXPIRE', mk, ttl)
    i = i + 12
  end
end
