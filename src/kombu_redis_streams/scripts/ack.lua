-- Acknowledge entries of one stream and remove what no group needs any more.
--
-- KEYS: the stream.
-- ARGV: group, mode ('q' queue stream, 'f' fanout stream), entry IDs...
-- Returns the number of entries acknowledged.
local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
discard(KEYS[1], ARGV[2], ids)
return acked
