-- Fenced acquire: the acquire script, plus reading the key's fencing counter
-- in the same atomic step (docs/fencing.md).
-- KEYS[1]  the lock key
-- KEYS[2]  the key's fencing counter
-- ARGV[1]  our token (unique per attempt)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  the counter's lifetime in milliseconds
-- Reply: {1, c}      the key now holds our token; c = max(counter, TIME in
--                    microseconds), also stored as the counter with a fresh
--                    lifetime. A missing counter (new key, expired, or lost in
--                    a restart without data) is thereby seeded from the clock.
--        {0, pttl, holder}  another token holds the key: its remaining time
--                   (-1: no TTL) and that token, as from the plain acquire
--                   script (wake-on-release); nothing was written.
-- Counters are decimal integers below 2^53, exact in Lua's doubles; they are
-- formatted with %.0f because Redis would print a Lua number with %.14g.
local v = redis.call('GET', KEYS[1])
if v ~= false and v ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1]), v}
end
local c = redis.call('GET', KEYS[2])
if c then
  c = tonumber(c)
  if c == nil then
    return redis.error_reply('ERR redlock: fencing counter ' .. KEYS[2] .. ' is not a number')
  end
else
  c = 0
end
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > c then
  c = now
end
redis.call('SET', KEYS[2], string.format('%.0f', c), 'PX', ARGV[3])
return {1, c}
