-- Take back the entries a consumer of the same name left pending, for a
-- process that restarts under a stable consumer name.
--
-- KEYS: the stream.
-- ARGV: group, consumer, count.
-- Returns a flat list of entry ID, fields, delivery count. Entries whose
-- payload was deleted are acknowledged and skipped.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[3], ARGV[2])
if type(pending) == 'table' and pending.err then
  return {}
end
local ids = {}
local counts = {}
for _, item in ipairs(pending) do
  ids[#ids + 1] = item[1]
  counts[item[1]] = item[4]
end
if #ids == 0 then
  return {}
end
local out = {}
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
local seen = {}
for _, entry in ipairs(claimed) do
  if entry and entry[2] then
    seen[entry[1]] = true
    table.insert(out, entry[1])
    table.insert(out, entry[2])
    table.insert(out, counts[entry[1]] + 1)
  end
end
for _, id in ipairs(ids) do
  if not seen[id] then
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return out
