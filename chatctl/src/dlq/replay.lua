-- Re-drives one dead letter, atomically: the dead-lettered entry's fields
-- (`f.<field>`) are added to the stream its group reads, and the dead letter
-- is removed. A dead letter already gone (replayed before) re-drives
-- nothing, so running a replay twice re-drives once.
-- KEYS: 1 dead-letter stream, 2 target stream.
-- ARGV: 1 dead letter id, 2 the target's MAXLEN (~), as its writers keep it.
-- Returns the new entry's id, or false when the dead letter is gone.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local fields = found[1][2]
local args = {}
for i = 1, #fields, 2 do
  local k = fields[i]
  if string.sub(k, 1, 2) == 'f.' then
    args[#args + 1] = string.sub(k, 3)
    args[#args + 1] = fields[i + 1]
  end
end
if #args == 0 then
  return redis.error_reply('dead letter ' .. ARGV[1] .. ' carries no entry fields')
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
