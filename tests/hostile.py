"""Hostile inputs shared by the tests of every door: each must answer them with a clean error."""

# JSON nested 10,000 deep: past Python's recursion limit for a naive parser or serialiser.
DEEP = "[" * 10_000 + "]" * 10_000
# A NUL character and a lone surrogate, as JSON escapes: only PostgreSQL refuses them.
NUL_JSON, SURROGATE_JSON = '"a\\u0000b"', '"a\\ud800b"'
