-- Read new entries for one consumer from several streams, in the order given,
-- without taking more than `count` entries in all.
--
-- KEYS: the streams, in read order.
-- ARGV: consumer, count, then for each stream: group, mode, expire_ms.
--   mode is 'q' for a queue stream and 'f' for a fanout stream; an upper-case
--   mode reads with NOACK and removes what it read at once.
--   expire_ms > 0 refreshes the stream's time to live (Queue(expires=...)).
--
-- Returns {entries, last_ids, notes}:
--   entries: flat list of stream index, entry ID, field list.
--   last_ids: for each stream, the ID of the last entry read from it, or the
--     group's last delivered ID when it gave nothing, or false when the credit
--     ran out before the stream was read. A blocking XREAD from these IDs
--     returns at once if entries are left and otherwise wakes on the first
--     entry added after this call.
--   notes: flat list of stream index and a note: 'created' when a missing
--     group (or stream) was created, or the error text of a failed read.
local consumer = ARGV[1]
local credit = tonumber(ARGV[2])
local entries = {}
local last_ids = {}
local notes = {}

local function read(key, group, noack)
  if noack then
    return redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', credit,
                       'NOACK', 'STREAMS', key, '>')
  end
  return redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', credit,
                     'STREAMS', key, '>')
end

for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 3
  local group = ARGV[base + 1]
  local mode = ARGV[base + 2]
  local expire_ms = tonumber(ARGV[base + 3])
  last_ids[i] = false

  if credit > 0 then
    local noack = mode == 'Q' or mode == 'F'
    local reply = read(key, group, noack)
    if type(reply) == 'table' and reply.err and string.find(reply.err, '^NOGROUP') then
      -- The group is gone (a restart without persistence, FLUSHALL, DEL or
      -- eviction): make it again from the start of whatever is left.
      redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
      table.insert(notes, i)
      table.insert(notes, 'created')
      reply = read(key, group, noack)
    end

    if type(reply) == 'table' and reply.err then
      table.insert(notes, i)
      table.insert(notes, reply.err)
    elseif reply then
      local got = reply[1][2]
      local ids = {}
      for _, entry in ipairs(got) do
        table.insert(entries, i)
        table.insert(entries, entry[1])
        table.insert(entries, entry[2])
        table.insert(ids, entry[1])
      end
      credit = credit - #got
      last_ids[i] = got[#got][1]
      if noack then
        discard(key, string.lower(mode), ids)
      end
    else
      local groups = redis.call('XINFO', 'GROUPS', key)
      for _, info in ipairs(groups) do
        if map_get(info, 'name') == group then
          last_ids[i] = map_get(info, 'last-delivered-id')
        end
      end
    end

    if expire_ms > 0 then
      redis.call('PEXPIRE', key, expire_ms)
    end
  end
end

return {entries, last_ids, notes}
