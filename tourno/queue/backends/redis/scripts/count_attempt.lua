-- ARGV: P, worker, id, attempts
local worker, id, attempts = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not owned(id, worker) or redis.call('HGET', jkey(id), 'state') ~= 'reserved' then return 0 end
local cur = tonumber(redis.call('HGET', jkey(id), 'attempts')) or 0
if attempts > cur then redis.call('HSET', jkey(id), 'attempts', attempts) end
return 1
