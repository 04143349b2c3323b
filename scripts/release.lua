-- Release: delete the key only if it still holds our token, leave the queue
-- of waiters (queue.lua, prepended), hand the key to an heir if asked, and
-- announce.
-- KEYS[1]  the lock key
-- KEYS[2]  the key's queue of waiters, KEYS[3] their expiries
-- ARGV[1]  our token
-- ARGV[2]  the release channel of the key
-- ARGV[3]  our waiter id, or '' to keep our place in the queue (the cleanup
--          after a missed attempt of a Lock that goes on waiting)
-- ARGV[4]  the heir: the id of our Client's next waiting call, to which we
--          hand the key ahead of the queue ('' for none), ARGV[5] its grace
--          in ms: it is about to try, right behind this release, told by our
--          Client, so nothing is announced: the other Clients' waiters, and
--          their processes, need not wake
-- Reply: 1 if our key was deleted (2 if, besides, waiters of other Clients
-- are queued: see the end), 0 if the key was absent or held another token.
-- The announcement, "<token> <next> <other>", wakes the waiter named next:
-- the first live one in the queue ('' if none: anyone may try); other is the
-- first waiter after it of another Client ('' if none), which tells a Client
-- handing the lock to its own calls that others wait (wait.go). A waiter
-- that leaves the queue of a free key announces too ("<id> <next> <other>"),
-- since the key may have been kept for it. PUBLISH goes through pcall: a node whose ACL
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
  if ARGV[4] ~= '' then
    -- The heir goes first (rank 0) for as long as its attempt may take;
    -- the entry then expires, or its attempt takes the key and removes it.
    local now = queue_prune(KEYS[2], KEYS[3])
    redis.call('ZADD', KEYS[2], 0, ARGV[4])
    queue_keep(KEYS[2], KEYS[3], ARGV[4], now, 0, ARGV[5], ARGV[5])
  end
  local next, other = queue_next(KEYS[2], KEYS[3])
  if ARGV[4] == '' then
    redis.pcall('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. next .. ' ' .. other)
  end
  -- Tell a releasing Lock call whether waiters of other Clients are queued
  -- (2 instead of 1): its Client then bounds the handoffs among its own
  -- calls (wait.go), which no announcement tells it when the key went to an
  -- heir.
  if ARGV[3] ~= '' and (other ~= '' or (next ~= '' and string.sub(next, 1, 8) ~= string.sub(ARGV[3], 1, 8))) then
    r = 2
  end
elseif left then
  local next, other = queue_next(KEYS[2], KEYS[3])
  redis.pcall('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. next .. ' ' .. other)
end
return r
