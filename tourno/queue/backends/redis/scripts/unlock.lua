-- ARGV: P, worker, key ('' = every key the worker holds). Returns how many it let go.
local worker = ARGV[2]
local mine = P .. ':locks:' .. worker
local keys = {ARGV[3]}
if ARGV[3] == '' then keys = redis.call('SMEMBERS', mine) end
local n = 0
for _, key in ipairs(keys) do
  local k = P .. ':lock:' .. key
  if redis.call('HGET', k, 'worker') == worker then
    redis.call('DEL', k)
    n = n + 1
  end
  redis.call('SREM', mine, key)
end
return n
