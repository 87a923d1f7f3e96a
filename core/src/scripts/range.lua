-- Messages after an offset, with the room's epoch and last offset.
-- KEYS: 1 meta, 2 room stream, 3 state. ARGV: 1 after offset, 2 max count,
-- 3 '1' to write a mark (the epoch, unchanged) for a WAIT after it to cover
-- what was read (acks that wait for replicas), else read-only.
-- Deleted entries read as their tombstones (events.lua).
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
local max = tonumber(ARGV[2])
local es = redis.call('XRANGE', KEYS[2], string.format('%d-0', after + 1), '+', 'COUNT', max)
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {epoch, last, es}
end
-- Fill the holes deletes left, up to `max` entries.
local out = {}
local want = after + 1
for _, e in ipairs(es) do
  local o = offset_of(e[1])
  while want < o and #out < max do
    local t = tomb(KEYS[3], want)
    if t then out[#out + 1] = t end
    want = want + 1
  end
  if #out >= max then break end
  out[#out + 1] = e
  want = o + 1
end
while #out < max and want <= last do
  local t = tomb(KEYS[3], want)
  if not t then break end
  out[#out + 1] = t
  want = want + 1
end
return {epoch, last, out}
