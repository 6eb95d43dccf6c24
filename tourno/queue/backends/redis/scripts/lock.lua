-- ARGV: P, key, worker, job id, stale_ms, expire_ms (0 = none). Returns 1 when
-- the worker holds the key: it was free, already its own, expired, or held by
-- a worker whose heartbeat is older than stale_ms (a dead worker).
local k = P .. ':lock:' .. ARGV[2]
local worker, stale, expire = ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local holder = redis.call('HGET', k, 'worker')
if holder and holder ~= worker then
  local beat = tonumber(redis.call('ZSCORE', P .. ':workers', holder))
  local ends = tonumber(redis.call('HGET', k, 'expires')) or 0
  if beat and beat > now - stale and (ends == 0 or ends > now) then return 0 end
end
local ends = 0
if expire > 0 then ends = now + expire end
redis.call('HSET', k, 'worker', worker, 'job', ARGV[4], 'at', now, 'expires', ends)
redis.call('SADD', P .. ':locks:' .. worker, ARGV[2])
return 1
