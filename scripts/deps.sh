#!/usr/bin/env bash
# Installs what `make test` needs from Debian when it is missing: etcd (the
# external etcd of the multi-process tests), protoc (the proto check) and
# Confluent's Python client (the independent Avro consumer of the e2e tests).
# Go modules come from go.sum through the module proxy.
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The reference consumer's downstream databases (services/consumer and diff
# tests, the e2e consumer test): MariaDB and PostgreSQL 15 (Debian 12's),
# each started per test from its binaries (services/dbtest).
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
# The independent consumer of the e2e tests: Confluent's Python AvroConsumer,
# run with Debian's interpreter (not whatever python3 is first on PATH).
/usr/bin/python3 -c 'import confluent_kafka.avro' >/dev/null 2>&1 || need+=(python3-confluent-kafka python3-avro python3-requests)
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
