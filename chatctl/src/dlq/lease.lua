-- Redis Cluster: the dead-letter stream and the target stream live in
-- different slots, so no one script can move an entry. This takes a lease on
-- one dead letter (in the dead-letter stream's slot) before it is re-added
-- and then removed, so two replays running at once do not both re-drive it.
-- KEYS: 1 dead-letter stream, 2 lease key. ARGV: 1 dead letter id, 2 lease ms.
-- Returns 1 (leased: re-drive it), 0 (gone: replayed already), -1 (another
-- replay holds it).
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return 0
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return -1
end
return 1
