-- ARGV: P, worker. Held jobs left behind are rescued at once.
local wid = ARGV[2]
if redis.call('SCARD', P .. ':held:' .. wid) > 0 then
  redis.call('ZADD', P .. ':workers', 0, wid)
else
  redis.call('ZREM', P .. ':workers', wid)
  redis.call('DEL', P .. ':worker:' .. wid)
end
return 1
