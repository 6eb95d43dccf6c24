-- ARGV: P, name, rate (tokens/s), burst, op ('take' | 'peek' | 'fill').
-- The same arithmetic as tourno/buckets.py, in one hash per bucket.
-- Returns {granted (0/1), tokens left, seconds until a whole token} as strings.
local k = P .. ':bucket:' .. ARGV[2]
local rate, burst, op = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local tokens = tonumber(redis.call('HGET', k, 'tokens'))
local at = tonumber(redis.call('HGET', k, 'at'))
if not tokens or not at then tokens, at = burst, now end
if now > at then
  tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
  at = now
end
if op == 'fill' then tokens = burst end
local granted = 0
if op == 'take' and tokens + 1e-9 >= 1 then
  tokens = math.max(0, tokens - 1)
  granted = 1
end
local wait = 0
if tokens + 1e-9 < 1 then wait = (1 - tokens) / rate end
redis.call('HSET', k, 'tokens', tostring(tokens), 'at', tostring(at))
-- A bucket left alone refills: once it would be full again, the key can go.
redis.call('PEXPIRE', k, math.ceil(burst / rate * 1000) + 60000)
return {tostring(granted), tostring(tokens), tostring(wait)}
