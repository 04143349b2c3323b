-- Extend: raise the remaining TTL of our key to at least ttl.
-- KEYS[1]  the lock key
-- ARGV[1]  our token
-- ARGV[2]  ttl in milliseconds
-- Reply: 1 if the key holds our token (its TTL is now >= ttl), 0 otherwise.
-- A missing key is never re-created: an extension must not re-acquire a lock
-- that lapsed. The TTL is never shortened, so a partial Extend (one that
-- reaches some nodes but not a quorum) cannot leave a node with less time
-- than the lock's current validity assumes.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[2])
local pttl = redis.call('PTTL', KEYS[1])
if pttl >= 0 and pttl < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
