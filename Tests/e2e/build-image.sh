#!/usr/bin/env bash
# Builds the Debian 12 guest image the end-to-end suite boots: debootstrap minbase plus what a
# provider's Debian 12 image has (systemd, cloud-init, sshd, a cloud kernel) plus every package
# deploy/cloud-init/user-data.yaml installs, plus a PostgreSQL server (the suite's stand-in for
# the cluster's database, for the off-site backup and recovery checks). The guest has no
# internet: its apt sources point at a local repository the suite serves (empty: everything the
# user-data asks for is already here, so cloud-init's `apt-get update` and `apt-get install`
# succeed without downloading anything).
#
#   Tests/e2e/build-image.sh DIR     # writes DIR/base.raw, DIR/vmlinuz, DIR/initrd.img
#
# Host packages: debootstrap e2fsprogs. About 2 min from an empty cache.
set -euo pipefail
out=${1:?usage: build-image.sh DIR}
work=$(mktemp -d "${TMPDIR:-/tmp}/nodeagent-image-XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mirror=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}

# A provider's image: systemd, cloud-init, sshd, a kernel with WireGuard.
# python3-cffi-backend: debootstrap does not resolve the virtual package cloud-init's
# python3-cryptography needs. socat: the stand-in K3s serves TLS through it.
base=systemd-sysv,udev,kmod,dbus,linux-image-cloud-amd64,cloud-init,python3-cffi-backend,openssh-server,ca-certificates,python3,netbase,iproute2,e2fsprogs,locales,socat
# What deploy/cloud-init/user-data.yaml installs (the suite checks that this list covers it).
userdata=nftables,wireguard-tools,wireguard-go,git,curl,libcurl4,libyaml-0-2,libpq5,postgresql-client,qrencode,restic,sqlite3
# The suite only: PostgreSQL 15, the database the guest backs up (section 8 of run.sh). Its
# postinst creates cluster 15/main (listening on localhost) and enables postgresql.service;
# debootstrap's policy-rc.d keeps it from starting in the chroot.
suite=postgresql
debootstrap --variant=minbase --include="$base,$userdata,$suite" bookworm "$rootfs" "$mirror"
# It starts at boot: the cluster exists and nothing masks or disables the unit.
test -f "$rootfs/etc/postgresql/15/main/postgresql.conf"
test -e "$rootfs/etc/systemd/system/multi-user.target.wants/postgresql.service"

echo nodeagent-e2e > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nodeagent-e2e\n' > "$rootfs/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$rootfs/etc/fstab"
# The suite's local repository stands in for the Debian mirror (203.0.113.1 is the host side).
echo 'deb [trusted=yes] http://203.0.113.1:8080/debian bookworm main' > "$rootfs/etc/apt/sources.list"
rm -f "$rootfs"/etc/apt/sources.list.d/*
cat > "$rootfs/etc/cloud/cloud.cfg.d/90_e2e.cfg" <<'EOF'
# NoCloud only: no metadata probing, no outbound traffic.
datasource_list: [ NoCloud, None ]
# C.UTF-8 needs no generation (en_US.UTF-8, the default, would be compiled at first boot).
locale: C.UTF-8
# RSA host keys take long under emulation.
ssh_genkeytypes: [ ed25519, ecdsa ]
EOF
# wait-online: one configured link is enough; a static address without IPv6 router
# advertisements would otherwise keep the link "configuring" (and cloud-init waiting) for 12 s.
mkdir -p "$rootfs/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n' \
  > "$rootfs/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"
mkdir -p "$rootfs/etc/systemd/network/10-cloud-init-eth0.network.d"
printf '[Network]\nIPv6AcceptRA=no\n' > "$rootfs/etc/systemd/network/10-cloud-init-eth0.network.d/no-ra.conf"
chroot "$rootfs" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "$rootfs" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service >/dev/null 2>&1 || true
# Root on the serial console without a password, for debugging a failed run; SSH stays key-only.
chroot "$rootfs" passwd -d root >/dev/null
rm -f "$rootfs"/etc/ssh/ssh_host_*
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/debootstrap

mkdir -p "$out"
cp -L "$rootfs"/boot/vmlinuz-* "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
cp -L "$rootfs"/boot/initrd.img-* "$out/initrd.img.tmp" && mv "$out/initrd.img.tmp" "$out/initrd.img"
truncate -s 3G "$out/base.raw.tmp"
mkfs.ext4 -q -F -L root -d "$rootfs" "$out/base.raw.tmp"
mv "$out/base.raw.tmp" "$out/base.raw"
