#!/bin/sh
# A Python 3.11 base image made of Debian bookworm packages alone, for machines that reach Debian's
# mirror but no container registry (the image build's BASE_IMAGE there):
#   infra/docker/debian-base.sh ENGINE TAG [MIRROR]
# mmdebstrap builds a minimal root file system (python3 3.11, python3-venv, passwd for useradd;
# no compilers, no documentation) and the engine imports it as TAG. Needs root (or fakeroot's
# rights) for mmdebstrap; an existing TAG is kept.
set -eu
engine=$1
tag=$2
mirror=${3:-http://deb.debian.org/debian}

if "$engine" image inspect "$tag" >/dev/null 2>&1; then
	echo "base image $tag exists"
	exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || {
	echo "mmdebstrap is not installed (apt-get install mmdebstrap)" >&2
	exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "building base image $tag from Debian bookworm packages ($mirror)"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,passwd \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	bookworm "$tmp/rootfs.tar" "$mirror"
out=$("$engine" import --change 'CMD ["python3"]' "$tmp/rootfs.tar" "$tag" 2>&1) || {
	echo "$out" >&2
	exit 1
}
echo "base image $tag imported"
