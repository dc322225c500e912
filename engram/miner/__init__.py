"""The miner: an HTTP node that stores records, answers queries and proves possession."""
