-- ARGV: P, queues... Deletes ready and delayed jobs; returns how many.
local n = 0
for i = 2, #ARGV do
  for _, key in ipairs({ready_key(ARGV[i]), delayed_key(ARGV[i])}) do
    for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      local u = redis.call('HGET', jkey(id), 'unique')
      if u and u ~= '' and redis.call('GET', P .. ':unique:' .. u) == id then
        redis.call('DEL', P .. ':unique:' .. u)
      end
      redis.call('DEL', jkey(id))
      n = n + 1
    end
    redis.call('DEL', key)
  end
end
return n
