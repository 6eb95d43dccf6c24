-- ARGV: P, taker, ids... The second half of a rescue with a taker: the jobs
-- the taker still owns go back to their queues. Returns how many did.
local taker = ARGV[2]
local now = now_ms()
local n = 0
local woke = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if owned(id, taker) then
    local q = unreserve(id, taker, now)
    if q then woke[q] = true end
    n = n + 1
  end
end
redis.call('DEL', P .. ':held:' .. taker)
for q, _ in pairs(woke) do redis.call('PUBLISH', P .. ':notify', q) end
return n
