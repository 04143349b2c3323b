-- Release: delete the key only if it still holds our token, and announce it.
-- KEYS[1]  the lock key
-- ARGV[1]  our token
-- ARGV[2]  the release channel of the key
-- Reply: 1 if our key was deleted, 0 if the key was absent or held another token.
-- The announcement wakes waiters (wake.go). It uses pcall: a node whose ACL
-- forbids PUBLISH on the channel must still report the release it did, since
-- a script's writes are not rolled back by a later error.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.pcall('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
