-- Sends the pushes whose collapse window has ended: one work item per user
-- and room with the count of messages in the window and the latest preview,
-- unless the user is present in the room by now.
-- Standalone: KEYS: 1 due zset, 2 notify stream. ARGV: 1 max items, 2 notify maxlen.
-- Due members are `state key \n presence key \n room \n user` (user ids
-- never contain control characters). Returns the number of due entries handled.
-- Redis Cluster (one due member, in its room's slot): KEYS: 1 state key,
-- 2 presence key, 3 the room's outbox. ARGV: 1 'one', 2 user, 3 room, 4
-- outbox ttl ms. Appends the push to the outbox (core/src/outbox.rs) and
-- returns it with any stale entries, for the caller to apply.
-- Redis Cluster, the due-set ops of notify.lua: KEYS: 1 due zset. ARGV: 1
-- 'ops', then triples ('z', score, member): schedule unless scheduled, or
-- ('r', max score, member): unschedule unless rescheduled after max score.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The collapsed push of one user and room, if one is owed; resets the window.
local function take(key, presence, user)
  local st = redis.call('HMGET', key, 'last', 'pend', 'sender', 'preview', 'offset', 'epoch')
  local pend = tonumber(st[2] or '0')
  if pend <= 0 then
    return nil
  end
  redis.call('HSET', key, 'last', now, 'pend', 0)
  for _, p in ipairs(redis.call('ZRANGEBYSCORE', presence, now, '+inf')) do
    local bar = string.find(p, '|', 1, true)
    if bar and string.sub(p, bar + 1) == user then
      return nil
    end
  end
  return {string.format('%d', pend), st[3] or '', st[4] or '', st[5] or '0', st[6] or ''}
end

if ARGV[1] == 'one' then
  -- Returned: the outbox entries a crashed caller left (older than 10 s),
  -- then this push, as notify.lua does.
  local out = {}
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    local at = tonumber(string.match(e, '^%["(%d+)%.'))
    if at and at < now - 10000 then
      out[#out + 1] = e
    end
  end
  local item = take(KEYS[1], KEYS[2], ARGV[2])
  if item then
    local nonce = string.format('%d.%d', now, redis.call('LLEN', KEYS[3]))
    local e = cjson.encode({nonce, 'x', ARGV[2], ARGV[3],
      item[1], item[2], item[3], item[4], item[5]})
    redis.call('RPUSH', KEYS[3], e)
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
    out[#out + 1] = e
  end
  return out
end
if ARGV[1] == 'ops' then
  for i = 2, #ARGV - 2, 3 do
    local op, score, member = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if op == 'z' then
      redis.call('ZADD', KEYS[1], 'NX', score, member)
    else
      local at = redis.call('ZSCORE', KEYS[1], member)
      if at and tonumber(at) <= tonumber(score) then
        redis.call('ZREM', KEYS[1], member)
      end
    end
  end
  return 0
end

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local parts = {}
  for p in string.gmatch(m, '[^\n]+') do
    parts[#parts + 1] = p
  end
  local key, presence, room, user = parts[1], parts[2], parts[3], parts[4]
  if user then
    local item = take(key, presence, user)
    if item then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
        'user', user, 'room', room, 'count', item[1],
        'sender', item[2], 'preview', item[3], 'offset', item[4], 'epoch', item[5])
    end
  end
end
return #due
