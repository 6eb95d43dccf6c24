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
