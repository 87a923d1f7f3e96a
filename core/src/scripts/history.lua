-- The newest `limit` messages below `before` (exclusive), newest first, as
-- they are now (events.lua: deleted ones as tombstones, the others with
-- what later events did to them).
-- KEYS: 1 meta, 2 room stream, 3 state, 4 threads. ARGV: 1 before offset
-- ('' = newest), 2 limit, 3 the mark, as in range.lua.
-- Returns {epoch or '', entries}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', {}}
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local hi = '+'
local top = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
if ARGV[1] ~= '' then
  if tonumber(ARGV[1]) <= 1 then
    return {epoch, {}}
  end
  hi = '(' .. ARGV[1] .. '-0'
  top = math.min(top, tonumber(ARGV[1]) - 1)
end
local limit = tonumber(ARGV[2])
local es = redis.call('XREVRANGE', KEYS[2], hi, '-', 'COUNT', limit)
local has_state = redis.call('EXISTS', KEYS[3]) == 1
local has_threads = redis.call('EXISTS', KEYS[4]) == 1
if not has_state and not has_threads then
  return {epoch, es}
end
local out = {}
local want = top
for _, e in ipairs(es) do
  local o = offset_of(e[1])
  while has_state and want > o and #out < limit do
    local t = tomb(KEYS[3], want)
    if t then out[#out + 1] = t end
    want = want - 1
  end
  if #out >= limit then break end
  out[#out + 1] = fold(KEYS[3], KEYS[4], has_state, has_threads, e)
  want = o - 1
end
while has_state and #out < limit and want >= 1 do
  local t = tomb(KEYS[3], want)
  if not t then break end
  out[#out + 1] = t
  want = want - 1
end
return {epoch, out}
