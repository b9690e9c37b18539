# promtool checks and unit-tests the alerting rules of deploy/monitoring (test/monitoring
# runs it, and fails without it). On a machine that lacks it, it comes from Debian's
# "prometheus" package: nothing happens when promtool is on PATH already.
.PHONY: promtool

# Root runs apt-get itself; anyone else through sudo. The package also installs a Prometheus
# server service (on :9090): where an init system started it, it is stopped and disabled, so
# that only the promtool binary is used.
APT_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_ENV  := DEBIAN_FRONTEND=noninteractive
APT_GET  := $(APT_SUDO) env $(APT_ENV) apt-get -q -y -o Dpkg::Use-Pty=0

promtool:
	@if command -v promtool >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "promtool is not on PATH and apt-get is missing: install Prometheus' promtool (2.x) and put it on PATH" >&2; \
		exit 1; \
	fi; \
	echo "installing promtool (Debian package prometheus)"; \
	if ! apt-cache show prometheus >/dev/null 2>&1; then $(APT_GET) update || exit 1; fi; \
	if ! $(APT_GET) install --no-install-recommends prometheus; then \
		$(APT_GET) update && $(APT_GET) install --no-install-recommends prometheus || exit 1; \
	fi; \
	if [ -d /run/systemd/system ]; then \
		$(APT_SUDO) systemctl disable --now prometheus.service >/dev/null 2>&1 || true; \
	elif [ -x /etc/init.d/prometheus ]; then \
		$(APT_SUDO) /etc/init.d/prometheus stop >/dev/null 2>&1 || true; \
	fi; \
	command -v promtool >/dev/null 2>&1 || { echo "promtool still not on PATH after installing prometheus" >&2; exit 1; }; \
	promtool --version 2>&1 | head -n 1

TEST_DEPS += promtool
