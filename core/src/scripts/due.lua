-- Sends the pushes whose collapse window has ended: one work item per user
-- and room with the count of messages in the window and the latest preview,
-- unless the user is present in the room by now.
-- KEYS: 1 due zset, 2 notify stream. ARGV: 1 max items, 2 notify maxlen.
-- Due members are `state key \n presence key \n room \n user` (user ids
-- never contain control characters).
-- Returns the number of due entries handled.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local parts = {}
  for p in string.gmatch(m, '[^\n]+') do
    parts[#parts + 1] = p
  end
  local key, presence, room, user = parts[1], parts[2], parts[3], parts[4]
  if user then
    local st = redis.call('HMGET', key, 'last', 'pend', 'sender', 'preview', 'offset', 'epoch')
    local last, pend = tonumber(st[1] or '0'), tonumber(st[2] or '0')
    if pend > 0 then
      local online = false
      for _, p in ipairs(redis.call('ZRANGEBYSCORE', presence, now, '+inf')) do
        local bar = string.find(p, '|', 1, true)
        if bar and string.sub(p, bar + 1) == user then
          online = true
          break
        end
      end
      if not online then
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
          'user', user, 'room', room, 'count', string.format('%d', pend),
          'sender', st[3] or '', 'preview', st[4] or '', 'offset', st[5] or '0', 'epoch', st[6] or '')
      end
      redis.call('HSET', key, 'last', now, 'pend', 0)
    end
  end
end
return #due
