"""`trimtab ops`: the operators' page and the panels it shares with the Grafana dashboard."""
