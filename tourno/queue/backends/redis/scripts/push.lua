-- ARGV: P, n, handed_ttl_ms ('' = a plain push; else a hand-off from
-- queue_outbox, idempotent by uuid, remembering handed uuids this long),
-- then 8 per job: id ('' = allocate here), uuid, queue, payload, priority,
-- delay_ms, unique_key, unique_for_ms.
-- Returns one number per job: its id (pushed), 0 (unique key taken) or -1
-- (its uuid was handed over before: not pushed again).
local n, handed = tonumber(ARGV[2]), ARGV[3] ~= ''
local now = now_ms()
local need = 0
for i = 0, n - 1 do
  if ARGV[4 + i * 8] == '' then need = need + 1 end
end
local next_id = 0
if need > 0 then next_id = redis.call('INCRBY', P .. ':seq:job', need) - need + 1 end
local hk = P .. ':handed'
if handed then redis.call('ZREMRANGEBYSCORE', hk, '-inf', now - tonumber(ARGV[3])) end
local out = {}
local woke = {}
local due = {}
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
      if not due[q] or now + delay < due[q] then due[q] = now + delay end
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
for q, at in pairs(due) do publish_due(q, at) end
return out
