-- Appends one message to a room, atomically: dedup check, next offset, XADD
-- to the room stream (MAXLEN ~ and age trim), TTL refresh, and a full copy
-- of the message on the room's fanout shard stream. The TTL is refreshed at
-- most every 1% of it (1 s at most) per room, not per message: a busy room
-- costs two EXPIREs a second, and its keys outlive its last message by at
-- least 99% of the TTL.
-- The room's meta remembers which Redis process wrote it last (`rid`, its
-- run_id). A room last written by another process (Redis restarted, or a
-- replica took over) may have lost acknowledged writes, and with them
-- offsets already handed out; but a Cluster slot migration moves a room
-- intact to another process too. ARGV 12 says what to do: '0' nothing (the
-- store is declared durable), '1' ask the caller (which knows the live
-- processes), 'renew' go on in a new epoch, 'adopt' keep the epoch.
-- The same call stores conversation events (docs/protocol.md,
-- "Conversation events"): an edit, a delete or a reaction takes the next
-- offset like a message, after its target is checked, and records what it
-- did in the room's state hash; a reply is a message that names its parent.
-- KEYS: 1 meta, 2 room stream, 3 dedup key, 4 state hash, 5 thread index,
--       6 sanctions, 7 slow mode, 8 shard stream (absent in a cluster)
-- ARGV: 1 room, 2 user, 3 text, 4 client_id, 5 kind, 6 epoch candidate,
--       7 maxlen, 8 max age ms (0 = none), 9 ttl secs, 10 dedup secs, 11 shard maxlen,
--       12 the writer check: '0', '1', 'renew' or 'adopt' (above),
--       13 op: 'post', 'edit', 'delete', 'react', 'unreact' or 'notice',
--       14 target offset (for 'post': the message replied to, 0 for none),
--       15 the target's epoch ('' = the current one), 16 emoji (for
--       'notice': the moderation action, JSON), 17 '1' when the caller is
--       staff (a moderator or the admin API: deletes anyone's message, no
--       slow mode), 18 '1' to check the user's mute, 19 slow mode ms (0 off)
-- Returns {1, "epoch|offset|id"} for a duplicate, {0, epoch, offset, id, gone}
-- when stored (gone: ids a delete removed from the room stream), {2, last
-- writer, this process} when asking (nothing written), {3, code, message}
-- when refused and {4} when a reaction is already as asked (nothing written).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- One read of the meta for the epoch, the last age and TTL checks and the writer.
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'agechk', 'ttlchk', 'rid')
local epoch = meta[1]
local rid = nil
if ARGV[12] ~= '0' then
  local info = redis.call('INFO', 'server')
  local at = string.find(info, 'run_id:', 1, true)
  if at then
    rid = string.sub(info, at + 7, at + 46)
  end
end
-- A meta without `rid` predates the check: it is adopted, not renewed.
if epoch and rid and meta[4] and meta[4] ~= rid then
  if ARGV[12] == '1' then
    return {2, meta[4], rid}
  elseif ARGV[12] == 'renew' then
    epoch = nil
  end
end
local OP = ARGV[13]
local target = tonumber(ARGV[14])
-- A muted user stores nothing but deletes of their own messages; slow
-- mode spaces each user's posts (moderation, docs/protocol.md).
if ARGV[18] == '1' and OP ~= 'delete' then
  local until_ms = redis.call('HGET', KEYS[6], 'm:' .. ARGV[2])
  if until_ms and (tonumber(until_ms) == 0 or tonumber(until_ms) > now) then
    return {3, 'forbidden', 'you are muted in this room'}
  end
end
local SLOW = tonumber(ARGV[19])
if SLOW > 0 and OP == 'post' and ARGV[17] ~= '1' then
  local next_ms = tonumber(redis.call('HGET', KEYS[7], ARGV[2]) or '0')
  if next_ms > now and not redis.call('GET', KEYS[3]) then
    return {3, 'rate_limited', string.format('slow mode: post again in %d ms', next_ms - now)}
  end
end
local acts = (OP ~= 'post' and OP ~= 'notice') or target > 0
if acts and not epoch then
  return {3, 'not_found', 'no such message in this room'}
end
if epoch then
  local dup = redis.call('GET', KEYS[3])
  -- Only a duplicate within the room's current epoch: a room recreated
  -- inside the dedup window stores the retry afresh.
  if dup and string.sub(dup, 1, #epoch + 1) == epoch .. '|' then
    -- Rewritten unchanged: a write, so a WAIT on this connection (acks
    -- that wait for replicas) covers the first attempt's write too.
    redis.call('SET', KEYS[3], dup, 'KEEPTTL')
    return {1, dup}
  end
else
  meta = {}
  -- A fresh room (one that expired, or renewed above): nothing of the old
  -- epoch leaks into the new one.
  epoch = ARGV[6]
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
-- The target: an entry of this epoch that is a message (not an event).
local T = nil
local tid = nil
local reactions = nil
if acts then
  if epoch ~= meta[1] or (ARGV[15] ~= '' and ARGV[15] ~= epoch) then
    return {3, 'not_found', 'that message is not in the room\'s current epoch'}
  end
  local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
  if target < 1 or target > last then
    return {3, 'not_found', 'no such message in this room'}
  end
  local e = redis.call('XRANGE', KEYS[2], string.format('%d-0', target),
    string.format('%d-18446744073709551615', target), 'COUNT', 1)[1]
  if e then
    tid = e[1]
    T = {}
    for i = 1, #e[2], 2 do T[e[2][i]] = e[2][i + 1] end
    local k = T['k']
    if k ~= 'user' and k ~= 'system' and k ~= 'summary' then
      return {3, 'bad_request', 'that offset is an event, not a message'}
    end
    if OP == 'edit' and (k ~= 'user' or T['u'] ~= ARGV[2]) then
      return {3, 'forbidden', 'only its author may edit a message'}
    end
    if OP == 'delete' and ARGV[17] ~= '1' and (k ~= 'user' or T['u'] ~= ARGV[2]) then
      return {3, 'forbidden', 'only its author or a moderator may delete a message'}
    end
  elseif redis.call('HEXISTS', KEYS[4], 'd:' .. target) == 1 then
    return {3, 'not_found', 'that message was deleted'}
  elseif not (OP == 'delete' and ARGV[17] == '1') then
    -- Trimmed from Redis: only the archive has it, and its author is not
    -- known here. A moderator's delete still goes through (the archive
    -- applies it).
    return {3, 'not_found', 'that message is older than what the room keeps in Redis'}
  end
  if OP == 'react' or OP == 'unreact' then
    -- [[emoji, [user, ...]], ...] in the order each emoji was first used.
    local raw = redis.call('HGET', KEYS[4], 'r:' .. target)
    reactions = {}
    if raw then
      local ok, v = pcall(cjson.decode, raw)
      if ok and type(v) == 'table' then reactions = v end
    end
    local at = nil
    for i, p in ipairs(reactions) do
      if p[1] == ARGV[16] then at = i end
    end
    local users = at and reactions[at][2] or {}
    local mine = nil
    for i, u in ipairs(users) do
      if u == ARGV[2] then mine = i end
    end
    if OP == 'react' then
      if mine then return {4} end
      if not at then
        if #reactions >= 20 then
          return {3, 'bad_request', 'a message takes at most 20 different reactions'}
        end
        reactions[#reactions + 1] = {ARGV[16], {ARGV[2]}}
      else
        users[#users + 1] = ARGV[2]
      end
    else
      if not mine then return {4} end
      table.remove(users, mine)
      if #users == 0 then table.remove(reactions, at) end
    end
  end
end
if rid and meta[4] ~= rid then
  redis.call('HSET', KEYS[1], 'rid', rid)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
-- Ids are <offset>-<ms> so that every read by offset is a direct range.
local id = string.format('%d-%d', offset, now)
-- What an event or a reply adds to the entry: its target (g), the
-- message replied to (p), the emoji (j) and whether it is taken back (z);
-- a delete also carries what the archive needs for the tombstone.
local extra = {}
if OP == 'post' then
  if target > 0 then extra = {'p', target} end
elseif OP == 'edit' then
  extra = {'g', target}
elseif OP == 'notice' then
  extra = {'a', ARGV[16]}
elseif OP == 'delete' then
  extra = {'g', target}
  if T then
    for _, k in ipairs({'u', 'c', 'k', 'p'}) do
      if T[k] then
        extra[#extra + 1] = 'g' .. k
        extra[#extra + 1] = T[k]
      end
    end
    extra[#extra + 1] = 'gi'
    extra[#extra + 1] = tid
  end
else
  extra = {'g', target, 'j', ARGV[16]}
  if OP == 'unreact' then
    extra[#extra + 1] = 'z'
    extra[#extra + 1] = '1'
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], id,
  'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5], unpack(extra))
-- What the event did, for readers (events.lua). These keys may be new, so
-- they get the room's TTL here rather than at the next refresh.
local gone = {}
if acts then
  if OP == 'post' then
    redis.call('ZADD', KEYS[5], 0, string.format('%020d:%020d', target, offset))
    redis.call('EXPIRE', KEYS[5], ARGV[9])
  elseif OP == 'edit' then
    local x = redis.call('HGET', KEYS[4], 'x:' .. target)
    redis.call('HSET', KEYS[4], 't:' .. target, ARGV[3], 'e:' .. target, now,
      'x:' .. target, x and (x .. ',' .. id) or id)
  elseif OP == 'delete' then
    if tid then
      -- The message and every edit of it leave the stream; tombstones
      -- without text stand in their places.
      redis.call('XDEL', KEYS[2], tid)
      gone[1] = tid
      redis.call('HSET', KEYS[4], 'd:' .. target, cjson.encode({i = tid, u = T['u'], c = T['c'],
        k = T['k'], p = T['p'], by = ARGV[2], at = now}))
      local x = redis.call('HGET', KEYS[4], 'x:' .. target)
      if x then
        for eid in string.gmatch(x, '[^,]+') do
          local ee = redis.call('XRANGE', KEYS[2], eid, eid)[1]
          if ee then
            local ef = {}
            for i = 1, #ee[2], 2 do ef[ee[2][i]] = ee[2][i + 1] end
            redis.call('XDEL', KEYS[2], eid)
            gone[#gone + 1] = eid
            redis.call('HSET', KEYS[4], 'd:' .. string.sub(eid, 1, string.find(eid, '-', 1, true) - 1),
              cjson.encode({i = eid, u = ef['u'], c = ef['c'], k = 'edit', g = target, by = ARGV[2], at = now}))
          end
        end
      end
      redis.call('HDEL', KEYS[4], 't:' .. target, 'e:' .. target, 'x:' .. target, 'r:' .. target)
    end
  elseif #reactions > 0 then
    redis.call('HSET', KEYS[4], 'r:' .. target, cjson.encode(reactions))
  else
    redis.call('HDEL', KEYS[4], 'r:' .. target)
  end
  if OP ~= 'post' then
    redis.call('EXPIRE', KEYS[4], ARGV[9])
  end
end

local max_age = tonumber(ARGV[8])
if max_age > 0 then
  -- Age trimming looks at most once a second per room: MINID ~ by the first offset young enough.
  local checked = tonumber(meta[2] or '0')
  if now - checked >= 1000 then
    redis.call('HSET', KEYS[1], 'agechk', now)
    local cutoff = now - max_age
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if first then
      local dash = string.find(first[1], '-', 1, true)
      local fo = tonumber(string.sub(first[1], 1, dash - 1))
      local fts = tonumber(string.sub(first[1], dash + 1))
      if fts < cutoff then
        local lo, hi = fo, offset
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          local e = redis.call('XRANGE', KEYS[2], string.format('%d-0', mid),
            string.format('%d-18446744073709551615', mid), 'COUNT', 1)[1]
          local young = false
          if e then
            local d = string.find(e[1], '-', 1, true)
            young = tonumber(string.sub(e[1], d + 1)) >= cutoff
          end
          if young then hi = mid else lo = mid + 1 end
        end
        redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%d-0', lo))
      end
    end
  end
end

local ttl = tonumber(ARGV[9])
if now - tonumber(meta[3] or '0') >= math.min(1000, ttl * 10) then
  redis.call('HSET', KEYS[1], 'ttlchk', now)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
end
-- In Redis Cluster the shard stream lives in another slot: the caller adds
-- the copy right after this script (KEYS has 7 entries then).
if SLOW > 0 and OP == 'post' and ARGV[17] ~= '1' then
  redis.call('HSET', KEYS[7], ARGV[2], now + SLOW)
  redis.call('PEXPIRE', KEYS[7], SLOW)
end
if KEYS[8] then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[11], '*',
    'r', ARGV[1], 'e', epoch, 'o', offset, 'i', id,
    'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5], unpack(extra))
end
redis.call('SET', KEYS[3], epoch .. '|' .. string.format('%d', offset) .. '|' .. id, 'EX', ARGV[10])
return {0, epoch, offset, id, gone}
