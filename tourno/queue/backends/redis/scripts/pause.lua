-- ARGV: P, notice, queues... Pauses the queues not paused yet (field = queue,
-- value = when, ms); returns them, and tells the workers if there are any.
local now = now_ms()
local changed = {}
for i = 3, #ARGV do
  if redis.call('HSETNX', P .. ':paused', ARGV[i], now) == 1 then
    changed[#changed + 1] = ARGV[i]
  end
end
if #changed > 0 then redis.call('PUBLISH', P .. ':notify', ARGV[2]) end
return changed
