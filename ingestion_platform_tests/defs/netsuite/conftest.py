"""The sandbox-and-warehouse environment of `test_assets` shared with the profile tests."""

from ingestion_platform_tests.defs.netsuite.test_assets import make_env

__all__ = ["make_env"]
