-- Queues push work for the rooms of one fanout batch (one call per batch).
-- Per room, recipients are its members and the users who joined it, minus
-- the present ones. Per recipient the room's messages are collapsed first
-- (count, latest message, never their own), so the cost is one state update
-- per offline recipient, not per message. Per user and room at most one push
-- per window: the first messages of a window are queued at once; later ones
-- only count, and one push at the window's end carries the count and the
-- latest preview. Re-running a batch (fanout redelivery) counts nothing
-- twice: the state remembers the last offset counted in the epoch.
-- A room whose recipients were all present leaves a marker that lives until
-- the first of their presence entries lapses; while it lives the room is
-- skipped at the cost of one EXISTS (its writers delete it on any change
-- that could make a recipient absent sooner: see Keys::room_all_present).
-- It also counts each room's messages for the automatic summary trigger.
-- KEYS: 1 notify stream, 2 due zset. In Redis Cluster those live in other
-- slots: KEYS is then just the (single) room's outbox, and the stream and
-- due-set writes are appended to it as ops for the caller to apply (then
-- remove). Entries a crashed caller left are returned by a later call once
-- they are 10 s old, so a crash between this script and the caller's writes
-- repeats ops (the notifier drops a repeated push) instead of losing them.
-- ARGV: 1 window ms, 2 notify maxlen, 3 preview max bytes, 4 state ttl ms,
--       5 summarize every N messages (0 = off), then per room:
--       room, members key, joined key, presence key, all-present marker key,
--       summary counter key, push-state key prefix, message count k,
--       then k x (sender, offset, epoch, text, kind)
-- Returns one flag per room, in order: 1 when its count crossed a multiple of N.
-- Deferred (cluster): {flags, outbox}; the entries are described in
-- core/src/outbox.rs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local NOTIFY, DUE = KEYS[1], KEYS[2]
local WINDOW, MAXLEN, PREVIEW, TTL, EVERY =
  tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local DEFER = #KEYS == 1
local OUTBOX = KEYS[1]

local mine = {}

-- Entries start with a nonce (time and position), so that removing one
-- never removes a later identical one.
local function defer(op)
  table.insert(op, 1, string.format('%d.%d', now, redis.call('LLEN', OUTBOX)))
  local e = cjson.encode(op)
  redis.call('RPUSH', OUTBOX, e)
  mine[#mine + 1] = e
end

local function queue(u, room, count, sender, preview, offset, epoch)
  if DEFER then
    defer({'x', u, room, count, sender, preview, offset, epoch})
  else
    redis.call('XADD', NOTIFY, 'MAXLEN', '~', MAXLEN, '*',
      'user', u, 'room', room, 'count', count, 'sender', sender, 'preview', preview,
      'offset', offset, 'epoch', epoch)
  end
end

local function due_add(score, member)
  if DEFER then
    defer({'z', string.format('%d', score), member})
  else
    redis.call('ZADD', DUE, 'NX', score, member)
  end
end

-- `upto`: the score the covered trailing push was scheduled at, at most.
local function due_remove(member, upto)
  if DEFER then
    defer({'r', string.format('%d', upto), member})
  else
    redis.call('ZREM', DUE, member)
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

local function count_for_summary(counter, msgs)
  if EVERY <= 0 then
    return 0
  end
  local c = redis.call('HMGET', counter, 'ep', 'seen', 'n')
  local ep, seen, n = c[1], tonumber(c[2] or '0'), tonumber(c[3] or '0')
  local counted, top, top_ep = 0, seen, ep
  for _, m in ipairs(msgs) do
    if m.kind ~= 'summary' and (m.epoch ~= ep or m.offset > seen) then
      counted = counted + 1
    end
    if m.epoch ~= top_ep or m.offset > top then
      top, top_ep = m.offset, m.epoch
    end
  end
  if counted == 0 then
    return 0
  end
  redis.call('HSET', counter, 'ep', top_ep, 'seen', top, 'n', n + counted)
  redis.call('EXPIRE', counter, 2592000)
  if math.floor((n + counted) / EVERY) > math.floor(n / EVERY) then
    return 1
  end
  return 0
end

local function queue_pushes(room, members, joined, presence, marker, prefix, msgs)
  local pushable = {}
  for _, m in ipairs(msgs) do
    if m.kind ~= 'summary' then
      pushable[#pushable + 1] = m
    end
  end
  if #pushable == 0 or redis.call('EXISTS', marker) == 1 then
    return
  end
  local recipients = redis.call('SUNION', members, joined)
  if #recipients == 0 then
    return
  end
  -- Per present user, when their last presence entry lapses.
  local online = {}
  local entries = redis.call('ZRANGEBYSCORE', presence, now, '+inf', 'WITHSCORES')
  for j = 1, #entries, 2 do
    local m = entries[j]
    local bar = string.find(m, '|', 1, true)
    if bar then
      local u, lapse = string.sub(m, bar + 1), tonumber(entries[j + 1])
      if not online[u] or lapse > online[u] then
        online[u] = lapse
      end
    end
  end
  local all_until = nil
  for _, u in ipairs(recipients) do
    if online[u] then
      if all_until ~= false and (all_until == nil or online[u] < all_until) then
        all_until = online[u]
      end
    else
      all_until = false
      local key = prefix .. u
      local st = redis.call('HMGET', key, 'last', 'pend', 'ep', 'seen')
      local last, pend = tonumber(st[1] or '0'), tonumber(st[2] or '0')
      local seen_ep, seen = st[3], tonumber(st[4] or '0')
      local count, latest = 0, nil
      for _, m in ipairs(pushable) do
        if m.sender ~= u and ((m.epoch ~= seen_ep) or (m.offset > seen)) then
          count = count + 1
          latest = m
        end
      end
      if latest then
        local member = key .. '\n' .. presence .. '\n' .. room .. '\n' .. u
        local preview = cut(latest.text, PREVIEW)
        if now - last >= WINDOW then
          queue(u, room, string.format('%d', pend + count), latest.sender, preview,
            string.format('%d', latest.offset), latest.epoch)
          redis.call('HSET', key, 'last', now, 'pend', 0, 'ep', latest.epoch, 'seen', latest.offset)
          -- A window's trailing push scheduled earlier is covered by this one.
          due_remove(member, last + WINDOW)
        else
          redis.call('HSET', key, 'pend', pend + count, 'sender', latest.sender, 'preview', preview,
            'offset', string.format('%d', latest.offset), 'epoch', latest.epoch,
            'ep', latest.epoch, 'seen', latest.offset)
          due_add(last + WINDOW, member)
        end
        redis.call('PEXPIRE', key, TTL)
      end
    end
  end
  if all_until then
    local at = string.format('%d', all_until)
    redis.call('SET', marker, at, 'PXAT', at)
  end
end

local flags = {}
local i = 6
while i + 7 <= #ARGV do
  local room, members, joined, presence, marker, counter, prefix =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local k = tonumber(ARGV[i + 7])
  i = i + 8
  local msgs = {}
  for _ = 1, k do
    msgs[#msgs + 1] = {sender = ARGV[i], offset = tonumber(ARGV[i + 1]), epoch = ARGV[i + 2], text = ARGV[i + 3], kind = ARGV[i + 4]}
    i = i + 5
  end
  flags[#flags + 1] = count_for_summary(counter, msgs)
  queue_pushes(room, members, joined, presence, marker, prefix, msgs)
end
if DEFER then
  redis.call('PEXPIRE', OUTBOX, TTL)
  -- This call's entries, and those a crashed caller left (older than 10 s:
  -- a caller still applying its own is not raced into a repeat).
  local out = {}
  for _, e in ipairs(redis.call('LRANGE', OUTBOX, 0, -1)) do
    local at = tonumber(string.match(e, '^%["(%d+)%.'))
    if at and at < now - 10000 then
      out[#out + 1] = e
    end
  end
  for _, e in ipairs(mine) do
    out[#out + 1] = e
  end
  return {flags, out}
end
return flags
