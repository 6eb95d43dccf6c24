-- ARGV: P, worker, held ids... Jobs reserved by the worker that it does not
-- hold (a claim whose reply was lost) go back to their queues; the claim's
-- first job in (priority, id) order gets back the attempt it was charged.
-- Without a claim time to group by, the jobs found are taken as one claim:
-- the worker calls this with no claim in flight, so there is at most one.
local worker = ARGV[2]
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local now = now_ms()
local stray = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. ':held:' .. worker)) do
  if not keep[id] and owned(id, worker) and redis.call('HGET', jkey(id), 'state') == 'reserved' then
    stray[#stray + 1] = {id, tonumber(redis.call('HGET', jkey(id), 'priority')) or 0}
  end
end
local head = nil
for _, s in ipairs(stray) do
  if head == nil or s[2] < head[2] or (s[2] == head[2] and s[1] < head[1]) then head = s end
end
if head ~= nil then
  local attempts = tonumber(redis.call('HGET', jkey(head[1]), 'attempts')) or 0
  if attempts > 0 then redis.call('HSET', jkey(head[1]), 'attempts', attempts - 1) end
end
local woke = {}
for _, s in ipairs(stray) do
  local q = unreserve(s[1], worker, now)
  if q then woke[q] = true end
end
for q, _ in pairs(woke) do redis.call('PUBLISH', P .. ':notify', q) end
return #stray
