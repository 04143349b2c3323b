-- Fenced acquire: the acquire script, plus reading the key's fencing counter
-- in the same atomic step (docs/fencing.md). queue.lua is prepended.
-- KEYS[1]  the lock key
-- KEYS[2]  the key's fencing counter
-- KEYS[3]  the key's queue of waiters, KEYS[4] their expiries
-- ARGV[1]  our token (unique per attempt)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  the counter's lifetime in milliseconds
-- ARGV[4..7]  waiter id ('' for TryLock), rank, cap and grace (queue.lua)
-- ARGV[8..9]  the next waiting call of our Client, as in the plain script
-- Reply: {1, c}      the key now holds our token; c = max(counter, TIME in
--                    microseconds), also stored as the counter with a fresh
--                    lifetime. A missing counter (new key, expired, or lost in
--                    a restart without data) is thereby seeded from the clock.
--        {0, wait, holder}  refused, as by the plain acquire script
--                   (another token holds the key, or it is reserved for a
--                   waiter ranked before us); nothing but our queue entry was
--                   written.
-- Counters are decimal integers below 2^53, exact in Lua's doubles; they are
-- formatted with %.0f because Redis would print a Lua number with %.14g.
local function behind(wait)
  if ARGV[8] ~= '' then
    queue_behind(KEYS[3], KEYS[4], ARGV[8], ARGV[9], wait, ARGV[6], ARGV[7], queue_now())
  end
end
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] then
  local wait = queue_turn(KEYS[1], KEYS[3], KEYS[4], v, ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  if wait then
    behind(wait)
    return {0, wait, v or ''}
  end
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
behind(tonumber(ARGV[2]))
return {1, c}
