-- ARGV: P, worker, ids...
local worker = ARGV[2]
local now = now_ms()
local n = 0
local woke = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if owned(id, worker) and redis.call('HGET', jkey(id), 'state') == 'reserved' then
    local q = unreserve(id, worker, now)
    if q then woke[q] = true end
    n = n + 1
  end
end
for q, _ in pairs(woke) do redis.call('PUBLISH', P .. ':notify', q) end
return n
