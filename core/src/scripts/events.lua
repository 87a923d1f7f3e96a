-- Shared by the readers (range, history, thread): prepended to each script.
-- STATE is the room's state hash (Keys::room_state), THREADS its thread index.
-- A deleted entry is gone from the stream (XDEL: its text is gone from
-- Redis), and its tombstone stands in its place, without text, so that every
-- read still sees consecutive offsets.
local function tomb(STATE, o)
  local raw = redis.call('HGET', STATE, 'd:' .. o)
  if not raw then
    return nil
  end
  local ok, d = pcall(cjson.decode, raw)
  if not ok or type(d) ~= 'table' or type(d.i) ~= 'string' then
    return nil
  end
  local f = {'u', tostring(d.u or ''), 't', '', 'c', tostring(d.c or ''), 'k', tostring(d.k or 'user'), 'x', '1'}
  for _, k in ipairs({'g', 'p'}) do
    if d[k] then
      f[#f + 1] = k
      f[#f + 1] = tostring(d[k])
    end
  end
  return {d.i, f}
end

local function offset_of(id)
  return tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1))
end

-- What later events did to message `e` (an entry whose kind is a message):
-- its current text and edit time, its reactions, its reply count, appended
-- as fields T, E, R and N.
local function fold(STATE, THREADS, has_state, has_threads, e)
  local f = e[2]
  local kind = nil
  for i = 1, #f, 2 do
    if f[i] == 'k' then kind = f[i + 1] end
    if f[i] == 'x' then return e end
  end
  if kind ~= 'user' and kind ~= 'system' and kind ~= 'summary' then
    return e
  end
  local o = offset_of(e[1])
  if has_state then
    local s = redis.call('HMGET', STATE, 't:' .. o, 'e:' .. o, 'r:' .. o)
    if s[1] then f[#f + 1] = 'T'; f[#f + 1] = s[1] end
    if s[2] then f[#f + 1] = 'E'; f[#f + 1] = s[2] end
    if s[3] then f[#f + 1] = 'R'; f[#f + 1] = s[3] end
  end
  if has_threads then
    local p = string.format('%020d', o)
    local n = redis.call('ZLEXCOUNT', THREADS, '[' .. p .. ':', '[' .. p .. ';')
    if n > 0 then f[#f + 1] = 'N'; f[#f + 1] = tostring(n) end
  end
  return e
end
