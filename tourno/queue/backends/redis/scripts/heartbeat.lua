-- ARGV: P, worker, fields (name, hostname, pid, queues, started_at, current_job_id, jobs_done),
-- register ('1' = allocate a worker id). Returns {worker id, now ms, restart ms or false}.
local now = now_ms()
local wid = ARGV[2]
if ARGV[10] == '1' then wid = tostring(redis.call('INCR', P .. ':seq:worker')) end
local started = ARGV[7]
if started == '' then started = now end
redis.call('HSET', P .. ':worker:' .. wid, 'name', ARGV[3], 'hostname', ARGV[4], 'pid', ARGV[5],
           'queues', ARGV[6], 'started_at', started, 'current_job_id', ARGV[8], 'jobs_done', ARGV[9],
           'heartbeat_at', now)
redis.call('ZADD', P .. ':workers', now, wid)
return {wid, tostring(now), redis.call('GET', P .. ':restart')}
