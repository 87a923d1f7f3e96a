-- Idempotency per work item and device: may this worker send now?
-- KEYS: 1 the item's send-state hash.
-- ARGV: 1 device token, 2 lease ms, 3 keep secs, 4 this worker's name.
-- A field is 'done' once sent (or settled), or 'lease:<until ms>:<worker>'
-- while a worker is sending; its holder renews it before each attempt, and a
-- crashed holder's lease runs out so another worker can take over.
-- Returns 1 to send, 0 when done, -1 while another worker holds the lease.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v == 'done' then
  return 0
end
if v then
  local until_ms, owner = string.match(v, '^lease:(%d+):(.*)$')
  if until_ms and owner ~= ARGV[4] and tonumber(until_ms) > now then
    return -1
  end
end
redis.call('HSET', KEYS[1], ARGV[1], 'lease:' .. string.format('%d', now + tonumber(ARGV[2])) .. ':' .. ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
