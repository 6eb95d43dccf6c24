-- ARGV: P, worker, queue, limit, default_timeout_ms, margin_ms, migrate (the
-- most delayed jobs moved into the ready set), done ids...
local worker, q, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local default_timeout, margin, migrate = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
complete(worker, 8, #ARGV)
local now = now_ms()
local dk = delayed_key(q)
local due = redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, migrate)
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
for _, id in ipairs(ids) do
  redis.call('ZREM', rk, id)
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'payload', 'attempts', 'priority', 'cancel')
  -- A cancelled job that went back to the queue is left for sweep_cancelled.
  if f[1] and not f[4] then
    local attempts = tonumber(f[2]) or 0
    if #out == 0 then attempts = attempts + 1 end
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
