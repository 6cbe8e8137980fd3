-- Remove the consumers of a group that hold no pending entry and were idle
-- for at least idle_ms. A consumer that reads again is created again by
-- XREADGROUP, so removing an idle one loses nothing.
--
-- KEYS: the stream.
-- ARGV: group, idle_ms, a consumer name to keep (the caller's own).
-- Returns the number of consumers removed.
local reply = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(reply) == 'table' and reply.err then
  return 0
end
local removed = 0
for _, info in ipairs(reply) do
  local name = map_get(info, 'name')
  if name ~= ARGV[3] and tonumber(map_get(info, 'pending')) == 0
      and tonumber(map_get(info, 'idle')) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return removed
