-- Messages after an offset, with the room's epoch and last offset.
-- KEYS: 1 meta, 2 room stream. ARGV: 1 after offset, 2 max count,
-- 3 '1' to write a mark (the epoch, unchanged) for a WAIT after it to cover
-- what was read (acks that wait for replicas), else read-only.
-- Returns {epoch or '', last, entries}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', 0, {}}
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local after = tonumber(ARGV[1])
if after >= last then
  return {epoch, last, {}}
end
return {epoch, last, redis.call('XRANGE', KEYS[2], string.format('%d-0', after + 1), '+', 'COUNT', ARGV[2])}
