-- ARGV: P, worker, n, n ids, then metrics (record_metrics in lib.lua)
local n = tonumber(ARGV[3])
record_metrics(4 + n)
return complete(ARGV[2], 4, 3 + n)
