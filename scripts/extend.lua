-- Extend: raise the remaining TTL of each of our keys to at least its ttl.
-- One call may carry any number of locks, so that auto-extension renews many
-- locks in one round trip per node.
-- KEYS[i]      a lock key
-- ARGV[2i-1]   our token for KEYS[i]
-- ARGV[2i]     the ttl for KEYS[i] in milliseconds
-- Reply: an array with, for each key, 1 if it holds our token (its TTL is now
-- >= ttl), 0 otherwise.
-- A missing key is never re-created: an extension must not re-acquire a lock
-- that lapsed. The TTL is never shortened, so a partial Extend (one that
-- reaches some nodes but not a quorum) cannot leave a node with less time
-- than the lock's current validity assumes.
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = 0
  if redis.call('GET', key) == ARGV[2 * i - 1] then
    local ttl = tonumber(ARGV[2 * i])
    local pttl = redis.call('PTTL', key)
    if pttl >= 0 and pttl < ttl then
      redis.call('PEXPIRE', key, ttl)
    end
    out[i] = 1
  end
end
return out
