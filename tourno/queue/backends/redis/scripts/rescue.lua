-- ARGV: P, stale_ms, ttl_ms. Returns {id, former owner} pairs.
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
