-- ARGV: P. Per queue: {queue, ready, delayed, reserved, oldest ready ms or false}, now.
-- The oldest ready time is looked for among the first 1000 ready jobs (in
-- claim order), so it is exact unless priorities reorder a long queue.
local now = now_ms()
local reserved = {}
for _, id in ipairs(redis.call('ZRANGE', P .. ':reserved', 0, -1)) do
  local q = redis.call('HGET', jkey(id), 'queue')
  if q then reserved[q] = (reserved[q] or 0) + 1 end
end
local out = {}
local queues = redis.call('SMEMBERS', P .. ':queues')
table.sort(queues)
for _, q in ipairs(queues) do
  local due = redis.call('ZCOUNT', delayed_key(q), '-inf', now)
  local later = redis.call('ZCOUNT', delayed_key(q), '(' .. now, '+inf')
  local ready = redis.call('ZCARD', ready_key(q)) + due
  local oldest = false
  for _, id in ipairs(redis.call('ZRANGE', ready_key(q), 0, 999)) do
    local at = tonumber(redis.call('HGET', jkey(id), 'at'))
    if at and (not oldest or at < oldest) then oldest = at end
  end
  local first_due = redis.call('ZRANGEBYSCORE', delayed_key(q), '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if first_due[2] then
    local at = tonumber(first_due[2])
    if not oldest or at < oldest then oldest = at end
  end
  if ready + later + (reserved[q] or 0) > 0 then
    out[#out + 1] = {q, ready, later, reserved[q] or 0, oldest and tostring(oldest) or false}
  end
end
return out
