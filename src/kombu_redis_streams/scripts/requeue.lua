-- Give an entry back to its queue in one atomic step: append a copy to the
-- queue stream, then acknowledge and remove the delivered entry.
--
-- KEYS: the stream the entry was read from, the queue stream to append to.
-- ARGV: group, mode, entry ID, body, meta, expire_ms.
-- Returns the ID of the new entry.
local new_id = redis.call('XADD', KEYS[2], '*', 'body', ARGV[4], 'meta', ARGV[5])
local expire_ms = tonumber(ARGV[6])
if expire_ms > 0 then
  redis.call('PEXPIRE', KEYS[2], expire_ms)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
discard(KEYS[1], ARGV[2], {ARGV[3]})
return new_id
