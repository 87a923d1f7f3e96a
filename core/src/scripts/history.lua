-- The newest `limit` messages below `before` (exclusive), newest first (read-only).
-- KEYS: 1 meta, 2 room stream. ARGV: 1 before offset ('' = newest), 2 limit.
-- Returns {epoch or '', entries}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', {}}
end
local hi = '+'
if ARGV[1] ~= '' then
  if tonumber(ARGV[1]) <= 1 then
    return {epoch, {}}
  end
  hi = '(' .. ARGV[1] .. '-0'
end
return {epoch, redis.call('XREVRANGE', KEYS[2], hi, '-', 'COUNT', ARGV[2])}
