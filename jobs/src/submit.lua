-- Queues a room's summary unless one is already pending or running.
-- KEYS: 1 the room's current-job key, 2 the record of the job the caller saw
--       there (any key when none), 3 the new job's record
-- ARGV: 1 id the caller saw ('' = none), 2 new id, 3 room, 4 since, 5 until,
--       6 now ms, 7 record ttl secs, 8 reason, 9 stale ms
-- A pending or running job whose record was not touched for `stale ms` is
-- abandoned (its queue lost, its worker gone): a new job replaces it.
-- Returns {'new', id}, {'existing', id}, or {'retry'} if the current job changed.
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then
  return {'retry'}
end
if cur then
  local st = redis.call('HMGET', KEYS[2], 'status', 'updated_at')
  local fresh = tonumber(ARGV[6]) - tonumber(st[2] or '0') < tonumber(ARGV[9])
  if (st[1] == 'pending' or st[1] == 'running') and fresh then
    return {'existing', cur}
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[7])
redis.call('HSET', KEYS[3], 'status', 'pending', 'room', ARGV[3], 'since', ARGV[4], 'until', ARGV[5],
  'attempts', 0, 'reason', ARGV[8], 'created_at', ARGV[6], 'updated_at', ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[7])
return {'new', ARGV[2]}
