-- Step 2 of fail: the failed_jobs row is written; delete the job.
local worker, id = ARGV[2], ARGV[3]
if not owned(id, worker) or redis.call('HGET', jkey(id), 'state') ~= 'failing' then return 0 end
delete_job(id, worker)
return 1
