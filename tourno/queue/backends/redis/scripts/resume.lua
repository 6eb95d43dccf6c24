-- ARGV: P, notice, queues... Resumes the paused ones; returns them, and tells
-- the workers if there are any (their monitors reload and wake them).
local changed = {}
for i = 3, #ARGV do
  if redis.call('HDEL', P .. ':paused', ARGV[i]) == 1 then
    changed[#changed + 1] = ARGV[i]
  end
end
if #changed > 0 then redis.call('PUBLISH', P .. ':notify', ARGV[2]) end
return changed
