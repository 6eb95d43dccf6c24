-- ARGV: P, ids... Cancels each job: a ready or delayed one is deleted, a
-- reserved (or failing) one is flagged (field 'cancel', set P:cancel) and
-- its owner told on P:control. Returns {id, queue, payload, running (0|1)}
-- for each job found.
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'payload', 'owner')
  local state, q = f[1], f[2]
  if state == 'ready' or state == 'delayed' then
    redis.call('ZREM', ready_key(q), id)
    redis.call('ZREM', delayed_key(q), id)
    delete_job(id, '')
    out[#out + 1] = {id, q, f[3], 0}
  elseif state == 'reserved' or state == 'failing' then
    redis.call('HSET', k, 'cancel', '1')
    redis.call('SADD', P .. ':cancel', id)
    if f[4] and f[4] ~= '' then redis.call('PUBLISH', P .. ':control', f[4]) end
    out[#out + 1] = {id, q, f[3], 1}
  end
end
return out
