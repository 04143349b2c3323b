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
--          in ms. Our Client tells the heir, so nothing is announced: the
--          other Clients' waiters, and their processes, need not wake
-- ARGV[6]  the heir's token, to hand the key to it directly ('' to only keep
--          the key for the heir, which then makes its own attempt: with
--          fencing, whose counter only the acquire script advances)
-- ARGV[7]  the heir's ttl in ms
-- ARGV[8..9]  the id and rank of the call waiting behind the heir in our
--          Client, to register behind it ('' if none; see queue_behind)
-- ARGV[10] the longest a waiter sleeps between attempts, in ms (queue_keep)
-- Reply: 1 if our key was deleted, 3 if it was handed to the heir's token
-- (plus 1 in both cases if waiters of other Clients are queued: see the
-- end), 0 if the key was absent or held another token.
-- The announcement, "<token> <next> <other>", wakes the waiter named next:
-- the first live one in the queue ('' if none: anyone may try); other is the
-- first waiter after it of another Client ('' if none), which tells a Client
-- handing the lock to its own calls that others wait (wait.go). A waiter
-- that leaves the queue of a free key announces too ("<id> <next> <other>"),
-- since the key may have been kept for it. PUBLISH goes through pcall: a node whose ACL
-- forbids the channel must still report the release it did, since a
-- script's writes are not rolled back by a later error.

-- others_wait tells a releasing Lock call whether waiters of other Clients
-- are queued (2 instead of 1, 4 instead of 3): its Client then bounds the
-- handoffs among its own calls (wait.go), which no announcement tells it
-- when the key went to an heir.
local function others_wait(next, other)
  return ARGV[3] ~= '' and (other ~= '' or (next ~= '' and string.sub(next, 1, 8) ~= string.sub(ARGV[3], 1, 8)))
end
local r = 0
local handto = ARGV[6] or ''
if redis.call('GET', KEYS[1]) == ARGV[1] then
  r = 1
  if handto == '' then
    redis.call('DEL', KEYS[1])
  end
end
if r == 1 and handto ~= '' then
  -- Handed over: the heir holds the key from now for its ttl, as if its
  -- own attempt had set it (SET replaces our token), and leaves the queue,
  -- as we do; its validity counts from when this release was sent
  -- (wait.go). The fewest commands: this runs once per handoff.
  redis.call('SET', KEYS[1], handto, 'PX', ARGV[7])
  if ARGV[3] ~= '' then
    redis.call('ZREM', KEYS[2], ARGV[3], ARGV[4])
    redis.call('ZREM', KEYS[3], ARGV[3], ARGV[4])
  else
    redis.call('ZREM', KEYS[2], ARGV[4])
    redis.call('ZREM', KEYS[3], ARGV[4])
  end
  local now
  if ARGV[8] ~= '' then
    now = queue_now()
    queue_behind(KEYS[2], KEYS[3], ARGV[8], ARGV[9], tonumber(ARGV[7]), ARGV[10], ARGV[5], now)
  end
  local next, other = queue_next(KEYS[2], KEYS[3], now)
  r = 3
  if others_wait(next, other) then
    r = r + 1
  end
  return r
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
  if others_wait(next, other) then
    r = r + 1
  end
elseif left then
  local next, other = queue_next(KEYS[2], KEYS[3])
  redis.pcall('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. next .. ' ' .. other)
end
return r
