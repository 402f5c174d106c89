"""On the device: bundles, the device check and the comparison of device reports."""
