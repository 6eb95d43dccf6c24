"""`tourno schedule`: slots, exactly-once dispatch, the loop."""
