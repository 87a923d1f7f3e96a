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
-- KEYS: 1 meta, 2 room stream, 3 dedup key, 4 shard stream (absent in a cluster)
-- ARGV: 1 room, 2 user, 3 text, 4 client_id, 5 kind, 6 epoch candidate,
--       7 maxlen, 8 max age ms (0 = none), 9 ttl secs, 10 dedup secs, 11 shard maxlen,
--       12 the writer check: '0', '1', 'renew' or 'adopt' (above)
-- Returns {1, "epoch|offset|id"} for a duplicate, {0, epoch, offset, id} when
-- stored, {2, last writer, this process} when asking (nothing written).
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
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
if rid and meta[4] ~= rid then
  redis.call('HSET', KEYS[1], 'rid', rid)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
-- Ids are <offset>-<ms> so that every read by offset is a direct range.
local id = string.format('%d-%d', offset, now)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], id,
  'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5])

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
end
-- In Redis Cluster the shard stream lives in another slot: the caller adds
-- the copy right after this script (KEYS has 3 entries then).
if KEYS[4] then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*',
    'r', ARGV[1], 'e', epoch, 'o', offset, 'i', id,
    'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5])
end
redis.call('SET', KEYS[3], epoch .. '|' .. string.format('%d', offset) .. '|' .. id, 'EX', ARGV[10])
return {0, epoch, offset, id}
