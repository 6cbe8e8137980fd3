-- Take over entries that other consumers left idle for at least min_idle_ms,
-- with their delivery counts. XPENDING with IDLE finds them on the server, so
-- a long run of a live consumer's entries costs no extra round trips, and the
-- script runs whole, so two consumers running it at once never receive the
-- same entry.
--
-- KEYS: the stream.
-- ARGV: group, consumer, min_idle_ms, start ID, count.
-- Returns {next start ID, flat list of entry ID, fields, delivery count}.
-- The next start ID is 0-0 when the scan reached the end of the pending
-- entries list. Entries whose payload was deleted are acknowledged and skipped.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3],
                            ARGV[4], '+', ARGV[5])
if type(pending) == 'table' and pending.err then
  if string.find(pending.err, '^NOGROUP') then
    return {'0-0', {}}
  end
  return pending
end
if #pending == 0 then
  return {'0-0', {}}
end
local ids = {}
local deliveries = {}
for _, item in ipairs(pending) do
  ids[#ids + 1] = item[1]
  deliveries[item[1]] = tonumber(item[4])
end
local next_start = '0-0'
if #pending >= tonumber(ARGV[5]) then
  next_start = id_successor(ids[#ids])
end
local entries = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(ids))
local claimed = {}
local found = {}
for _, entry in ipairs(entries) do
  if entry and entry[2] then
    found[entry[1]] = true
    table.insert(claimed, entry[1])
    table.insert(claimed, entry[2])
    -- XCLAIM counted this delivery.
    table.insert(claimed, deliveries[entry[1]] + 1)
  end
end
for _, id in ipairs(ids) do
  if not found[id] then
    -- The entry was deleted while pending: nothing is left to deliver.
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return {next_start, claimed}
