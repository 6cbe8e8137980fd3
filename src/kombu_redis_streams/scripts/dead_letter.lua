-- Move an entry to a dead-letter stream with the reason, then acknowledge and
-- remove it from the stream it was read from. The entry's fields are copied
-- as stored, so an entry that cannot be decoded keeps its bytes.
--
-- KEYS: the stream the entry was read from, the dead-letter stream.
-- ARGV: group, mode, entry ID, reason, queue, delivery count.
-- Returns the ID of the dead-letter entry, or false when the entry is gone.
local found = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
local new_id = false
if #found > 0 then
  local copy = found[1][2]
  table.insert(copy, 'x-dead-letter-reason')
  table.insert(copy, ARGV[4])
  table.insert(copy, 'x-dead-letter-queue')
  table.insert(copy, ARGV[5])
  table.insert(copy, 'x-dead-letter-source')
  table.insert(copy, KEYS[1] .. ' ' .. ARGV[3])
  table.insert(copy, 'x-delivery-count')
  table.insert(copy, ARGV[6])
  new_id = redis.call('XADD', KEYS[2], '*', unpack(copy))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
discard(KEYS[1], ARGV[2], {ARGV[3]})
return new_id
