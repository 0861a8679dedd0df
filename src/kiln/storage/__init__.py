"""Storage: LMDB environments, key and record codecs, indexes, the audit log and the writer."""
