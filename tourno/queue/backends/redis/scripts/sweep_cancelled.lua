-- ARGV: P. Deletes flagged jobs that went back to their queue before their
-- worker heard of the cancel (claims skip them); forgets flags of jobs that
-- are gone. Returns {id, queue, payload} for each job deleted.
local out = {}
local ck = P .. ':cancel'
for _, id in ipairs(redis.call('SMEMBERS', ck)) do
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'payload')
  local state, q = f[1], f[2]
  if not state then
    redis.call('SREM', ck, id)
  elseif state ~= 'reserved' and state ~= 'failing' then
    redis.call('ZREM', ready_key(q), id)
    redis.call('ZREM', delayed_key(q), id)
    delete_job(id, '')
    redis.call('SREM', ck, id)
    out[#out + 1] = {id, q, f[3]}
  end
end
return out
