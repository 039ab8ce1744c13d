"""Test kits for plugin authors (pytest plugins shipped with timecoin)."""
