-- Shared by join.lua and unread.lua (prepended): the messages of others
-- after `user`'s read marker in the current epoch, counted up to CAP
-- (reading at most SCAN entries: CAP means "CAP or more").
local UNREAD_CAP, UNREAD_SCAN = 100, 500
local function unread(STREAM, READS, user, epoch, last)
  local mark = redis.call('HGET', READS, user)
  local from = 0
  if mark then
    local e, o = string.match(mark, '^(.*):(%d+)$')
    if e == epoch then from = tonumber(o) end
  end
  local n, scanned = 0, 0
  local start = string.format('%d-0', from + 1)
  while from < last and n < UNREAD_CAP and scanned < UNREAD_SCAN do
    local es = redis.call('XRANGE', STREAM, start, '+', 'COUNT', 100)
    if #es == 0 then break end
    for _, e in ipairs(es) do
      scanned = scanned + 1
      local f = e[2]
      local k, u = nil, nil
      for i = 1, #f, 2 do
        if f[i] == 'k' then k = f[i + 1] elseif f[i] == 'u' then u = f[i + 1] end
      end
      if u ~= user and (k == 'user' or k == 'system' or k == 'summary') then
        n = n + 1
      end
    end
    start = '(' .. es[#es][1]
    if #es < 100 then break end
  end
  return math.min(n, UNREAD_CAP), from
end
