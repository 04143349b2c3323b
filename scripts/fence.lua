-- Fence: write a minted fencing token back as the key's counter, only where
-- we still hold the lock and only if it raises the counter (docs/fencing.md).
-- KEYS[1]  the lock key
-- KEYS[2]  the key's fencing counter
-- ARGV[1]  our token
-- ARGV[2]  the fencing token T (a decimal integer below 2^53)
-- ARGV[3]  the counter's lifetime in milliseconds
-- Reply: 1 if the key holds our token and the counter was below T: the
--          counter is now T with a fresh lifetime;
--        0 otherwise, and nothing was written.
-- Requiring counter < T (not counter = max(counter, T)) is what makes two
-- granted tokens differ: of two holders whose write-backs meet on a node, the
-- later one only succeeds with a larger token. A counter missing here (expired
-- or lost since our acquire) compares as the server's TIME, like a seed.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local c = redis.call('GET', KEYS[2])
if c then
  c = tonumber(c)
  if c == nil then
    return redis.error_reply('ERR redlock: fencing counter ' .. KEYS[2] .. ' is not a number')
  end
else
  local t = redis.call('TIME')
  c = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
if c >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
