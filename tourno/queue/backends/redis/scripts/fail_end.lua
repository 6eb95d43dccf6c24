-- Step 2 of fail: the failed_jobs row is written; delete the job.
-- ARGV: P, worker, id, then metrics (record_metrics in lib.lua)
local worker, id = ARGV[2], ARGV[3]
record_metrics(4)
if not owned(id, worker) or redis.call('HGET', jkey(id), 'state') ~= 'failing' then return 0 end
delete_job(id, worker)
return 1
