-- ARGV: P, worker, id, delay_ms, attempts ('' = keep), exception (1: the
-- attempt raised; counted in the hash's 'exceptions'), then metrics
-- (record_metrics in lib.lua)
local worker, id, delay, attempts = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local exception = ARGV[6] == '1'
record_metrics(7)
local k = jkey(id)
if not owned(id, worker) or redis.call('HGET', k, 'state') ~= 'reserved' then return 0 end
if attempts then
  local cur = tonumber(redis.call('HGET', k, 'attempts')) or 0
  if attempts > cur then redis.call('HSET', k, 'attempts', attempts) end
end
if exception then redis.call('HINCRBY', k, 'exceptions', 1) end
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
