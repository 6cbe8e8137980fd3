-- Remove a consumer from a group, but only when it holds no pending entry:
-- deleting a consumer that still holds entries would make them unclaimable.
--
-- KEYS: the stream.
-- ARGV: group, consumer.
-- Returns 1 when the consumer was removed, else 0.
local reply = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(reply) == 'table' and reply.err then
  return 0
end
for _, info in ipairs(reply) do
  if map_get(info, 'name') == ARGV[2] then
    if tonumber(map_get(info, 'pending')) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
