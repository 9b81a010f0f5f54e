"""Scripts that read or write many clusters' hashes in one command (a round's clusters: hundreds): one
command instead of one pipelined command per cluster and step keeps a round's cost in Redis, not in
redis-py's packing and parsing (docs/benchmarks.md). Used by `htdask.state.requests.RequestStore`.
"""
from __future__ import annotations

# Reads and writes over many clusters (a round's), one command each: KEYS the clusters' hashes (for GET_MANY
# each hash followed by its names set). GET_MANY: per cluster its hash (HGETALL's flat list) and names set.
GET_MANY = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = redis.call('SMEMBERS', KEYS[i + 1])
end
return out
"""
GENERATIONS = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, 'generation') or '0' end
return out
"""
# ARGV[2i - 1]: '1' to clear cluster i's error; ARGV[2i]: the newest request a round acted on ('' none), written
# only while the cluster exists (never re-creating a deleted cluster's record).
CLEAR_ERRORS = """
for i, key in ipairs(KEYS) do
  if ARGV[2 * i - 1] == '1' then redis.call('HDEL', key, 'error', 'error_at') end
  if ARGV[2 * i] ~= '' and redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'handled_seq', ARGV[2 * i]) end
end
return 0
"""
#: clusters per call of the scripts above (Redis serves nothing else while one runs)
MANY_CHUNK = 1000


def chunks(names: list[str]) -> list[list[str]]:
    """`names` in parts of at most MANY_CHUNK, one script call each."""
    return [names[i:i + MANY_CHUNK] for i in range(0, len(names), MANY_CHUNK)]


def pairs(flat: list) -> dict:
    """A hash from a script's HGETALL reply (a flat list: field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2]))
