-- Queues push work for one room's messages of a fanout batch. Recipients are
-- the room's members and the users who joined it, minus the present ones.
-- Per recipient the batch is collapsed first (count, latest message, never
-- their own), so the cost is one state update per recipient, not per message.
-- Per user and room at most one push per window: the first messages of a
-- window are queued at once; later ones only count, and one push at the
-- window's end carries the count and the latest preview.
-- Re-running a batch (fanout redelivery) counts nothing twice: the state
-- remembers the last offset counted in the epoch.
-- It also counts the room's messages for the automatic summary trigger.
-- KEYS: 1 members set, 2 joined set, 3 presence zset, 4 notify stream, 5 due zset,
--       6 summary counter hash
-- ARGV: 1 push-state key prefix (the user is appended), 2 room, 3 window ms,
--       4 notify maxlen, 5 preview max bytes, 6 state ttl ms,
--       7 summarize every N messages (0 = off),
--       then per message (offset order): sender, offset, epoch, text, kind
-- Returns 1 when the count crossed a multiple of N (queue a summary), else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local crossed = 0
local every = tonumber(ARGV[7])
if every > 0 then
  local c = redis.call('HMGET', KEYS[6], 'ep', 'seen', 'n')
  local ep, seen, n = c[1], tonumber(c[2] or '0'), tonumber(c[3] or '0')
  local counted, top, top_ep = 0, seen, ep
  local j = 8
  while j + 4 <= #ARGV do
    local off, e = tonumber(ARGV[j + 1]), ARGV[j + 2]
    if ARGV[j + 4] ~= 'summary' and (e ~= ep or off > seen) then
      counted = counted + 1
    end
    if e ~= top_ep or off > top then
      top, top_ep = off, e
    end
    j = j + 5
  end
  if counted > 0 then
    if math.floor((n + counted) / every) > math.floor(n / every) then
      crossed = 1
    end
    redis.call('HSET', KEYS[6], 'ep', top_ep, 'seen', top, 'n', n + counted)
    redis.call('EXPIRE', KEYS[6], 2592000)
  end
end
local recipients = redis.call('SUNION', KEYS[1], KEYS[2])
if #recipients == 0 then
  return crossed
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
  return string.sub(s, 1, i) .. '…'
end
local msgs = {}
local i = 8
while i + 4 <= #ARGV do
  if ARGV[i + 4] ~= 'summary' then
    msgs[#msgs + 1] = {sender = ARGV[i], offset = tonumber(ARGV[i + 1]), epoch = ARGV[i + 2], text = ARGV[i + 3]}
  end
  i = i + 5
end
if #msgs == 0 then
  return crossed
end
local window = tonumber(ARGV[3])
for _, u in ipairs(recipients) do
  if not online[u] then
    local key = ARGV[1] .. u
    local st = redis.call('HMGET', key, 'last', 'pend', 'ep', 'seen')
    local last, pend = tonumber(st[1] or '0'), tonumber(st[2] or '0')
    local seen_ep, seen = st[3], tonumber(st[4] or '0')
    local count, latest = 0, nil
    for _, m in ipairs(msgs) do
      local fresh = (m.epoch ~= seen_ep) or (m.offset > seen)
      if m.sender ~= u and fresh then
        count = count + 1
        latest = m
      end
    end
    if latest then
      local member = key .. '\n' .. KEYS[3] .. '\n' .. ARGV[2] .. '\n' .. u
      local preview = cut(latest.text, tonumber(ARGV[5]))
      if now - last >= window then
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*',
          'user', u, 'room', ARGV[2], 'count', string.format('%d', pend + count),
          'sender', latest.sender, 'preview', preview,
          'offset', string.format('%d', latest.offset), 'epoch', latest.epoch)
        redis.call('HSET', key, 'last', now, 'pend', 0, 'ep', latest.epoch, 'seen', latest.offset)
        -- A window's trailing push scheduled earlier is covered by this one.
        redis.call('ZREM', KEYS[5], member)
      else
        redis.call('HSET', key, 'pend', pend + count, 'sender', latest.sender, 'preview', preview,
          'offset', string.format('%d', latest.offset), 'epoch', latest.epoch,
          'ep', latest.epoch, 'seen', latest.offset)
        redis.call('ZADD', KEYS[5], 'NX', last + window, member)
      end
      redis.call('PEXPIRE', key, tonumber(ARGV[6]))
    end
  end
end
return crossed
