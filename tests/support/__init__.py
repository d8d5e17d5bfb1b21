"""Test infrastructure: loopback registries, a token server, hand-built and umoci-built images."""
