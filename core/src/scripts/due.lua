-- Sends the pushes whose collapse window has ended: one work item per user
-- and room with the count of messages in the window and the latest preview,
-- unless the user is present in the room by now.
-- KEYS: 1 due zset, 2 notify stream. ARGV: 1 max items, 2 notify maxlen.
-- Due members are `state key \n presence key \n room \n user`.
-- Returns the number of pushes queued.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local queued = 0
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local parts = {}
  for p in string.gmatch(m, '[^\n]+') do
    parts[#parts + 1] = p
  end
  local key, presence, room, user = parts[1], parts[2], parts[3], parts[4]
  if user then
    local pend = tonumber(redis.call('HGET', key, 'pend') or '0')
    if pend > 0 then
      local online = false
      for _, p in ipairs(redis.call('ZRANGEBYSCORE', presence, now, '+inf')) do
        if string.sub(p, -(#user + 1)) == '|' .. user then
          online = true
          break
        end
      end
      if not online then
        local f = redis.call('HMGET', key, 'sender', 'preview', 'offset', 'epoch')
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
          'user', user, 'room', room, 'count', string.format('%d', pend),
          'sender', f[1] or '', 'preview', f[2] or '', 'offset', f[3] or '0', 'epoch', f[4] or '')
        queued = queued + 1
      end
      redis.call('HSET', key, 'last', now, 'pend', 0)
    end
  end
end
return queued
