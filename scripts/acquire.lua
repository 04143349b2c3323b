-- Acquire: set-if-absent with a TTL, in one round trip.
-- KEYS[1]  the lock key
-- ARGV[1]  our token (unique per attempt)
-- ARGV[2]  ttl in milliseconds
-- Reply: {1}                the key now holds our token and expires in ttl ms;
--        {0, pttl, holder}  another token holds it: pttl is its remaining time
--                           in ms (-1: no TTL), so a waiter knows how long it
--                           may have to wait, and holder is that token, so it
--                           knows whose release to wait for. (Anyone who can
--                           run this script can also GET the key: returning the
--                           token discloses nothing new.)
-- A key that already holds our token counts as acquired and gets a fresh TTL:
-- that makes the script idempotent, so a reply lost on the wire cannot turn
-- our own key into a "held by another" vote that no cleanup would release.
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
return {0, redis.call('PTTL', KEYS[1]), v}
