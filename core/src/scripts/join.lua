-- Join: the room's epoch (created when the room has none) and last offset,
-- and, with `since`, whether every message after it is still retained.
-- A room last written by another Redis process is checked as in append.lua
-- (its `rid`; ARGV 6 '0', '1', 'renew' or 'adopt').
-- KEYS: 1 meta, 2 room stream, 3 state, 4 threads (removed with a fresh epoch),
--       5 read markers
-- ARGV: 1 epoch candidate, 2 ttl secs, 3 since epoch ('' = no since), 4 since offset, 5 max recover,
--       6 the writer check, 7 the mark, as in range.lua, 8 the user joining
--       (its unread count is returned: unread.lua)
-- Returns {epoch, last, recovered (-1 no since, 0 false, 1 true), unread}, or
-- {'writer', last writer, this process, 0} when asking (nothing written).
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'rid')
local epoch = meta[1]
local rid = nil
if ARGV[6] ~= '0' then
  local info = redis.call('INFO', 'server')
  local at = string.find(info, 'run_id:', 1, true)
  if at then
    rid = string.sub(info, at + 7, at + 46)
  end
end
if epoch and rid and meta[2] and meta[2] ~= rid then
  if ARGV[6] == '1' then
    return {'writer', meta[2], rid, 0}
  elseif ARGV[6] == 'renew' then
    epoch = nil
  end
end
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  meta[2] = nil
end
if rid and meta[2] ~= rid then
  redis.call('HSET', KEYS[1], 'rid', rid)
end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local n = unread(KEYS[2], KEYS[5], ARGV[8], epoch, last)
if ARGV[3] == '' then
  return {epoch, last, -1, n}
end
local since = tonumber(ARGV[4])
if ARGV[3] ~= epoch or since > last then
  return {epoch, last, 0, n}
end
if since == last then
  return {epoch, last, 1, n}
end
if last - since > tonumber(ARGV[5]) then
  return {epoch, last, 0, n}
end
-- Trimming only removes the oldest entries and offsets are contiguous, so
-- the range is whole when its first entry is still there, or every entry
-- before the first one left was deleted (and has a tombstone).
local first = redis.call('XRANGE', KEYS[2], string.format('%d-0', since + 1), '+', 'COUNT', 1)[1]
local upto = last
if first then
  upto = tonumber(string.sub(first[1], 1, string.find(first[1], '-', 1, true) - 1)) - 1
end
for o = since + 1, upto do
  if redis.call('HEXISTS', KEYS[3], 'd:' .. o) == 0 then
    return {epoch, last, 0, n}
  end
end
return {epoch, last, 1, n}
