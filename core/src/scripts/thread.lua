-- The newest `limit` replies to one message below `before` (exclusive),
-- newest first, as they are now (events.lua).
-- KEYS: 1 meta, 2 room stream, 3 state, 4 threads. ARGV: 1 parent offset,
-- 2 before offset ('' = newest), 3 limit, 4 the mark, as in range.lua.
-- Returns {epoch or '', entries, replies listed}
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', {}, 0}
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local p = string.format('%020d', tonumber(ARGV[1]))
local hi = '[' .. p .. ';'
if ARGV[2] ~= '' then
  hi = '(' .. p .. ':' .. string.format('%020d', tonumber(ARGV[2]))
end
local ms = redis.call('ZREVRANGEBYLEX', KEYS[4], hi, '[' .. p .. ':', 'LIMIT', 0, tonumber(ARGV[3]))
local has_state = redis.call('EXISTS', KEYS[3]) == 1
local out = {}
for _, m in ipairs(ms) do
  local o = tonumber(string.sub(m, 22))
  local e = redis.call('XRANGE', KEYS[2], string.format('%d-0', o),
    string.format('%d-18446744073709551615', o), 'COUNT', 1)[1]
  if e then
    out[#out + 1] = fold(KEYS[3], KEYS[4], has_state, true, e)
  elseif has_state then
    local t = tomb(KEYS[3], o)
    if t then out[#out + 1] = t end
  end
end
return {epoch, out, #ms}
