"""Bridges to other directories: publication into LDAP (ldap.py)."""
