#!/usr/bin/env bash
# The Prometheus config, alerting rules and the rules' unit tests, by Debian's promtool.
# Exit 77 (ctest: skipped) when promtool is not installed (deploy/install-deps.sh installs it).
set -euo pipefail
dir="$(cd "$(dirname "$0")/../deploy/prometheus" && pwd)"
command -v promtool >/dev/null || { echo "promtool not installed"; exit 77; }
cd "$dir"
promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml
