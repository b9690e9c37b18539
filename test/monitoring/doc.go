// Package monitoring checks the alerting rules and the Grafana dashboard of
// deploy/monitoring against a real manager's /metrics and against promtool: every series
// they query exists, the rules pass promtool's checks and unit tests, and the dashboard is
// complete.
package monitoring
