-- Release: delete the key only if it still holds our token.
-- KEYS[1]  the lock key
-- ARGV[1]  our token
-- Reply: 1 if our key was deleted, 0 if the key was absent or held another token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
