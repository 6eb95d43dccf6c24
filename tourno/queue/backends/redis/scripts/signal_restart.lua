-- ARGV: P. Records a restart signal; returns its time (ms).
local now = now_ms()
redis.call('SET', P .. ':restart', now)
return tostring(now)
