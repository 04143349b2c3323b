-- Acquire: set-if-absent with a TTL, in one round trip, respecting the queue
-- of waiting Lock calls (queue.lua, prepended).
-- KEYS[1]  the lock key
-- KEYS[2]  the key's queue of waiters, KEYS[3] their expiries
-- ARGV[1]  our token (unique per attempt)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3..6]  waiter id ('' for TryLock), rank, cap and grace (queue.lua)
-- ARGV[7..8]  the id and rank of the next waiting call of our Client, to
--             register behind us ('' if none; see queue_behind)
-- Reply: {1}                 the key now holds our token and expires in ttl ms;
--        {0, wait, holder}   refused: holder is the token holding the key (''
--                            if the key is free but reserved for a waiter
--                            ranked before us), wait how long in ms we may
--                            have to wait (-1: the key has no TTL). Waiters
--                            use holder to know whose release to wait for.
--                            (Anyone who can run this script can also GET the
--                            key: returning the token discloses nothing new.)
-- A key that already holds our token counts as acquired and gets a fresh TTL:
-- that makes the script idempotent, so a reply lost on the wire cannot turn
-- our own key into a "held by another" vote that no cleanup would release.
local v = redis.call('GET', KEYS[1])
local r
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  r = {1}
else
  local wait = queue_turn(KEYS[1], KEYS[2], KEYS[3], v, ARGV[3], ARGV[4], ARGV[5], ARGV[6])
  if wait then
    r = {0, wait, v or ''}
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    r = {1}
  end
end
if ARGV[7] ~= '' then
  queue_behind(KEYS[2], KEYS[3], ARGV[7], ARGV[8], r[2] or tonumber(ARGV[2]), ARGV[5], ARGV[6], queue_now())
end
return r
