-- ARGV: P, stale_ms, ttl_ms[, taker]. Returns {id, former owner} pairs.
-- Without a taker the jobs go straight back to their queues. With one (a
-- token of the caller's) they are only taken over: owned by the taker, held
-- under a lease of stale_ms, so that the caller can announce them before
-- rescue_finish hands them back; a caller that dies in between leaves them
-- to the lease, and the next rescue.
local stale, ttl, taker = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
local out = {}
local woke = {}
local wk = P .. ':workers'
local function release(id, owner)
  if taker and redis.call('EXISTS', jkey(id)) == 1 then
    redis.call('ZADD', P .. ':reserved', now + stale, id)
    if owner ~= '' then redis.call('SREM', P .. ':held:' .. owner, id) end
    redis.call('HSET', jkey(id), 'owner', taker)
    redis.call('SADD', P .. ':held:' .. taker, id)
  else
    local q = unreserve(id, owner, now)
    if q then woke[q] = true end
  end
  out[#out + 1] = {id, owner}
end
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', wk, '-inf', now - stale)) do
  local hk = P .. ':held:' .. wid
  for _, id in ipairs(redis.call('SMEMBERS', hk)) do
    if owned(id, wid) then
      release(id, wid)
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
  release(id, redis.call('HGET', jkey(id), 'owner') or '')
end
for q, _ in pairs(woke) do redis.call('PUBLISH', P .. ':notify', q) end
return out
