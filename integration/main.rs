// integration tests: see harness
