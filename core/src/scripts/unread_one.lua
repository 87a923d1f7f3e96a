-- One room's unread count for a user (unread.lua), for GET /v1/unread and
-- push badges.
-- KEYS: 1 meta, 2 room stream, 3 read markers. ARGV: 1 user.
-- Returns {epoch or '', last, unread, read offset}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', 0, 0, 0}
end
local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local n, from = unread(KEYS[2], KEYS[3], ARGV[1], epoch, last)
return {epoch, last, n, from}
