"""BrightData crawls: triggered crawls, snapshots polled by a sensor, raw JSON in the object store, parsed posts."""
