"""The directory's storage: backends behind one factory."""
