-- Messages after an offset, with the room's epoch and last offset (read-only).
-- KEYS: 1 meta, 2 room stream. ARGV: 1 after offset, 2 max count.
-- Returns {epoch or '', last, entries}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', 0, {}}
end
local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local after = tonumber(ARGV[1])
if after >= last then
  return {epoch, last, {}}
end
return {epoch, last, redis.call('XRANGE', KEYS[2], string.format('%d-0', after + 1), '+', 'COUNT', ARGV[2])}
