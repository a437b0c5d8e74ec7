"""sapd's read-only web view: the directory and session pages over the shared TCP listener."""
