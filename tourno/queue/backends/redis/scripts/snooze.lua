-- ARGV: P, worker, id, delay_ms, attempts, then metrics (record_metrics in
-- lib.lua). A release that sets the attempts (the snoozed attempt is given
-- back) instead of raising them, announced like one.
local worker, id, delay, attempts = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
record_metrics(6)
local k = jkey(id)
if not owned(id, worker) or redis.call('HGET', k, 'state') ~= 'reserved' then return 0 end
if attempts < 0 then attempts = 0 end
redis.call('HSET', k, 'attempts', attempts)
local now = now_ms()
if delay > 0 then
  local q = redis.call('HGET', k, 'queue')
  redis.call('ZREM', P .. ':reserved', id)
  redis.call('SREM', P .. ':held:' .. worker, id)
  redis.call('HSET', k, 'state', 'delayed', 'owner', '', 'at', now + delay)
  redis.call('ZADD', delayed_key(q), now + delay, id)
  publish_due(q, now + delay)
else
  local q = unreserve(id, worker, now)
  redis.call('PUBLISH', P .. ':notify', q)
end
return 1
