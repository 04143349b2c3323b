-- Release: delete the key only if it still holds our token, leave the queue
-- of waiters (queue.lua, prepended), and announce.
-- KEYS[1]  the lock key
-- KEYS[2]  the key's queue of waiters, KEYS[3] their expiries
-- ARGV[1]  our token
-- ARGV[2]  the release channel of the key
-- ARGV[3]  our waiter id, or '' to keep our place in the queue (the cleanup
--          after a missed attempt of a Lock that goes on waiting)
-- Reply: 1 if our key was deleted, 0 if the key was absent or held another token.
-- The announcement, "<token> <next>", wakes the waiter named next: the first
-- live one in the queue ('' if none: anyone may try). A waiter that leaves
-- the queue of a free key announces too ("<id> <next>"), since the key may
-- have been reserved for it. PUBLISH goes through pcall: a node whose ACL
-- forbids the channel must still report the release it did, since a
-- script's writes are not rolled back by a later error.
local r = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  r = 1
end
local left = false
if ARGV[3] ~= '' and redis.call('ZREM', KEYS[2], ARGV[3]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[3])
  left = redis.call('EXISTS', KEYS[1]) == 0
end
if r == 1 then
  redis.pcall('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. queue_next(KEYS[2], KEYS[3]))
elseif left then
  redis.pcall('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. queue_next(KEYS[2], KEYS[3]))
end
return r
