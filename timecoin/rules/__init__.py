"""Consensus-rule plugins: hook specifications and the plugin manager."""
