-- Take over entries that other consumers left idle for at least min_idle_ms,
-- with their delivery counts. XAUTOCLAIM is atomic, so two consumers running
-- this at once never receive the same entry.
--
-- KEYS: the stream.
-- ARGV: group, consumer, min_idle_ms, start ID, count.
-- Returns {next start ID, flat list of entry ID, fields, delivery count}.
-- Entries whose payload was deleted are acknowledged and skipped.
local reply = redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3],
                          ARGV[4], 'COUNT', ARGV[5])
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, '^NOGROUP') then
    return {'0-0', {}}
  end
  return reply
end
local claimed = {}
for _, entry in ipairs(reply[2]) do
  if entry[2] then
    local info = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    table.insert(claimed, entry[1])
    table.insert(claimed, entry[2])
    table.insert(claimed, info[1][4])
  else
    -- Redis 6.2 returns deleted entries with no fields; 7.0 drops them itself.
    redis.call('XACK', KEYS[1], ARGV[1], entry[1])
  end
end
return {reply[1], claimed}
