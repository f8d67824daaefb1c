"""The load-test engine: scenarios, users, HDR histograms, thresholds and the report."""
