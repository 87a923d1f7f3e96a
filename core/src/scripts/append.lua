-- Appends one message to a room, atomically: dedup check, next offset, XADD
-- to the room stream (MAXLEN ~ and age trim), TTL refresh, and a full copy
-- of the message on the room's fanout shard stream. The TTL is refreshed at
-- most every 1% of it (1 s at most) per room, not per message: a busy room
-- costs two EXPIREs a second, and its keys outlive its last message by at
-- least 99% of the TTL.
-- KEYS: 1 meta, 2 room stream, 3 dedup key, 4 shard stream (absent in a cluster)
-- ARGV: 1 room, 2 user, 3 text, 4 client_id, 5 kind, 6 epoch candidate,
--       7 maxlen, 8 max age ms (0 = none), 9 ttl secs, 10 dedup secs, 11 shard maxlen
-- Returns {1, "epoch|offset|id"} for a duplicate, {0, epoch, offset, id} when stored.
local dup = redis.call('GET', KEYS[3])
if dup then
  -- Only a duplicate within the room's current epoch: a room recreated
  -- inside the dedup window stores the retry afresh.
  local current = redis.call('HGET', KEYS[1], 'epoch')
  if current and string.sub(dup, 1, #current + 1) == current .. '|' then
    return {1, dup}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- One read of the meta for the epoch and the last age and TTL checks.
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'agechk', 'ttlchk')
local epoch = meta[1]
if not epoch then
  meta = {}
  -- A fresh room (or one that expired): a stale stream must not leak into the new epoch.
  epoch = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
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
