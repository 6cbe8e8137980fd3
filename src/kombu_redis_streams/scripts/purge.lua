-- Remove the ready entries of queue streams: those the group has not
-- delivered yet. Entries pending with a consumer stay; they are not ready.
--
-- KEYS: the queue streams.
-- ARGV: group.
-- Returns the number of entries removed.
local removed = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local last = '0-0'
    local has_group = false
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      if map_get(info, 'name') == ARGV[1] then
        last = map_get(info, 'last-delivered-id')
        has_group = true
      end
    end
    while true do
      local batch = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1000)
      if #batch == 0 then
        break
      end
      local ids = {}
      for _, entry in ipairs(batch) do
        ids[#ids + 1] = entry[1]
      end
      redis.call('XDEL', key, unpack(ids))
      removed = removed + #ids
      last = ids[#ids]
    end
    if has_group then
      redis.call('XGROUP', 'SETID', key, ARGV[1], '$')
    end
  end
end
return removed
