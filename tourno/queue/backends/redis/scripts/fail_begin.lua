-- Step 1 of fail: reserved (or already failing) -> failing; returns the queue.
-- ARGV: P, worker, id
local worker, id = ARGV[2], ARGV[3]
local k = jkey(id)
if not owned(id, worker) then return false end
local state = redis.call('HGET', k, 'state')
if state ~= 'reserved' and state ~= 'failing' then return false end
redis.call('HSET', k, 'state', 'failing')
redis.call('ZREM', P .. ':reserved', id)
return redis.call('HGET', k, 'queue')
