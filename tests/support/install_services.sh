#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests drive besides Python: Chromium and ChromeDriver
# (the web view's browser tests) and Slurm with munge and slurmdbd (a single-node cluster the tests
# start and stop themselves, see tests/support/slurm_cluster.py; slurmdbd keeps its accounting, which
# `sacct` reads, in the machine's MariaDB, installed here too when missing). Does nothing when all are present; needs
# root (or sudo) and apt otherwise. Without them the browser and Slurm tests skip, or fail under
# SKYBUTLER_REQUIRE_SERVICES=1.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v slurmctld >/dev/null || missing+=(slurm-wlm)
command -v munged >/dev/null || missing+=(munge)
command -v slurmdbd >/dev/null || missing+=(slurmdbd)
command -v mariadbd >/dev/null || command -v mysqld >/dev/null || missing+=(mariadb-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "install_services: apt-get not found; install ${missing[*]} yourself (their tests skip meanwhile)" >&2
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install_services: installing ${missing[*]}" >&2
$sudo apt-get update -q >/dev/null || true
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
