-- Helpers shared by the transport's scripts. The loader puts this file in
-- front of each script that uses it, so every script stays self-contained.

-- Return the value of `name` in a flat RESP2 map reply such as XINFO GROUPS.
local function map_get(reply, name)
  for i = 1, #reply, 2 do
    if reply[i] == name then
      return reply[i + 1]
    end
  end
  return nil
end

-- Split an entry ID into its millisecond and sequence parts, as numbers.
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_less(a, b)
  local a_ms, a_seq = id_parts(a)
  local b_ms, b_seq = id_parts(b)
  if a_ms ~= b_ms then
    return a_ms < b_ms
  end
  return a_seq < b_seq
end

local function id_successor(id)
  local ms, seq = id_parts(id)
  return string.format('%d-%d', ms, seq + 1)
end

-- Remove the entries of a fanout stream that every group has acknowledged:
-- those below the oldest pending entry of each group, and below what each
-- group has read. A stream with no group left keeps nothing.
local function trim_acknowledged(key)
  if redis.call('EXISTS', key) == 0 then
    return
  end
  local groups = redis.call('XINFO', 'GROUPS', key)
  if #groups == 0 then
    redis.call('XTRIM', key, 'MAXLEN', 0)
    return
  end
  local floor = nil
  for _, group in ipairs(groups) do
    local low
    if tonumber(map_get(group, 'pending')) > 0 then
      low = redis.call('XPENDING', key, map_get(group, 'name'))[2]
    else
      low = id_successor(map_get(group, 'last-delivered-id'))
    end
    if floor == nil or id_less(low, floor) then
      floor = low
    end
  end
  redis.call('XTRIM', key, 'MINID', floor)
end

-- Remove entries a consumer is done with: delete them from a queue stream,
-- whose group is its only reader, or trim a fanout stream.
local function discard(key, mode, ids)
  if #ids == 0 then
    return
  end
  if mode == 'q' then
    redis.call('XDEL', key, unpack(ids))
  else
    trim_acknowledged(key)
  end
end
