"""`trimtab route`: the user-hash router in front of the current and the canary replica sets."""
