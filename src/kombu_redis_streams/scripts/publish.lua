-- Append one message to each target stream, unless the routing tables changed
-- since the caller read them: then nothing is written, and the caller reloads
-- its tables and routes again, so no publish ever follows a stale route.
--
-- KEYS: the routing version key, then the target streams.
-- ARGV: expected version ('' skips the check), body, meta, maxlen (0: no cap), then expire_ms for
--   each target stream.
-- Returns {'stale'}, {'full', index of the first full stream} or
-- {'ok', new entry IDs...}. A full stream (maxlen entries, ready or pending)
-- makes the whole publish fail before anything is written.
if ARGV[1] ~= '' then
  local version = redis.call('GET', KEYS[1]) or '0'
  if version ~= ARGV[1] then
    return {'stale'}
  end
end
local maxlen = tonumber(ARGV[4])
if maxlen > 0 then
  for i = 2, #KEYS do
    if redis.call('XLEN', KEYS[i]) >= maxlen then
      return {'full', i - 1}
    end
  end
end
local reply = {'ok'}
for i = 2, #KEYS do
  reply[i] = redis.call('XADD', KEYS[i], '*', 'body', ARGV[2], 'meta', ARGV[3])
  local expire_ms = tonumber(ARGV[3 + i])
  if expire_ms > 0 then
    redis.call('PEXPIRE', KEYS[i], expire_ms)
  end
end
return reply
