"""NetSuite tables by incremental SuiteQL extraction into `netsuite.<table>`."""
