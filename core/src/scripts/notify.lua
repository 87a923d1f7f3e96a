-- Queues push work for one room's messages of a fanout batch: for each
-- message, every member or joined user of the room who is not present in it
-- (and is not the sender) gets at most one push per collapse window. The
-- first message of a window is queued at once; later ones only count, and
-- one push at the window's end carries the count and the latest preview.
-- KEYS: 1 members set, 2 joined set, 3 presence zset, 4 notify stream, 5 due zset
-- ARGV: 1 push-state key prefix (the user is appended), 2 room, 3 window ms,
--       4 notify maxlen, 5 preview max bytes,
--       then per message: sender, offset, epoch, text, kind
-- Returns the number of pushes queued now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local recipients = redis.call('SUNION', KEYS[1], KEYS[2])
if #recipients == 0 then
  return 0
end
local online = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
  local bar = string.find(m, '|', 1, true)
  if bar then
    online[string.sub(m, bar + 1)] = true
  end
end
-- Cut at a byte budget without splitting a UTF-8 sequence.
local function cut(s, n)
  if #s <= n then
    return s
  end
  local i = n
  while i > 0 do
    local b = string.byte(s, i + 1)
    if b < 128 or b >= 192 then
      break
    end
    i = i - 1
  end
  return string.sub(s, 1, i)
end
local window = tonumber(ARGV[3])
local queued = 0
local i = 6
while i + 4 <= #ARGV do
  local sender, offset, epoch, text, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if kind ~= 'summary' then
    local preview = cut(text, tonumber(ARGV[5]))
    for _, u in ipairs(recipients) do
      if u ~= sender and not online[u] then
        local key = ARGV[1] .. u
        local last = tonumber(redis.call('HGET', key, 'last') or '0')
        if now - last >= window then
          local pend = tonumber(redis.call('HGET', key, 'pend') or '0')
          redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*',
            'user', u, 'room', ARGV[2], 'count', string.format('%d', pend + 1),
            'sender', sender, 'preview', preview, 'offset', offset, 'epoch', epoch)
          redis.call('HSET', key, 'last', now, 'pend', 0)
          queued = queued + 1
        else
          redis.call('HINCRBY', key, 'pend', 1)
          redis.call('HSET', key, 'sender', sender, 'preview', preview, 'offset', offset, 'epoch', epoch)
          redis.call('ZADD', KEYS[5], 'NX', last + window,
            key .. '\n' .. KEYS[3] .. '\n' .. ARGV[2] .. '\n' .. u)
        end
        redis.call('PEXPIRE', key, window * 2 + 60000)
      end
    end
  end
end
return queued
