-- Move one dead-lettered entry back to a queue stream: append its body and
-- meta to the queue, then delete it from the dead-letter stream. Both keys
-- carry the queue's hash tag, and the script runs whole or not at all, so the
-- entry is never in both streams nor in neither.
--
-- KEYS: the dead-letter stream, the queue stream.
-- ARGV: dead-letter entry ID, body, meta.
-- Returns the ID of the new queue entry, or false when the dead-letter entry
-- is gone (another run requeued or deleted it).
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local new_id = redis.call('XADD', KEYS[2], '*', 'body', ARGV[2], 'meta', ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id
