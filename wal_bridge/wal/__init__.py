"""The write-ahead log: record codec, segment files, recovery and the log that ties them."""
