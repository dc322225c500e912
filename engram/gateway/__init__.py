"""The gateway: the miner protocol in front of the whole network."""
