-- The newest `limit` messages below `before` (exclusive), newest first.
-- KEYS: 1 meta, 2 room stream. ARGV: 1 before offset ('' = newest), 2 limit,
-- 3 the mark, as in range.lua.
-- Returns {epoch or '', entries}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', {}}
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local hi = '+'
if ARGV[1] ~= '' then
  if tonumber(ARGV[1]) <= 1 then
    return {epoch, {}}
  end
  hi = '(' .. ARGV[1] .. '-0'
end
return {epoch, redis.call('XREVRANGE', KEYS[2], hi, '-', 'COUNT', ARGV[2])}
