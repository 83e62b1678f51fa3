#!/usr/bin/env bash
# The end-to-end suite: a fresh Debian 12 guest (QEMU, software emulation) installs nodeagent
# through the shipped cloud-init user-data and converges under systemd; everything is checked
# from outside, the way a user would. See docs/testing.md, "The guest suite".
# Section 8 backs the guest's PostgreSQL up off-site (restic over SFTP to the host side),
# destroys the guest and boots a fresh one from the same user-data: it must come back with
# the old node's WireGuard identity, applied revision and database rows, by itself.
#
#   scripts/e2e [--record]     # --record appends the boot-to-converged time to BENCHMARKS.md
#
# Host packages: qemu-system-x86 qemu-utils genisoimage debootstrap e2fsprogs wireguard-tools
# wireguard-go openssh-client openssh-server (its sshd is the off-site SFTP host) restic git
# curl iproute2 python3 (and what scripts/deps installs).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
record=0
[ "${1:-}" = --record ] && record=1

id=$$
ns=nae2e$id
run=$(mktemp -d "${TMPDIR:-/tmp}/nodeagent-e2e-XXXXXX")
host_ip=203.0.113.1 guest_ip=203.0.113.2 mac=52:54:00:4e:41:02
wg_if=nae2e${id}w
t0=$(date +%s.%N)
elapsed() { echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f'; }
log() { echo "[$(printf '%6.1f' "$(elapsed)")s] $*"; }
pass=0 fail=0 failed=()
check() {
  local name=$1; shift
  if "$@"; then log "PASS $name"; pass=$((pass + 1)); else log "FAIL $name"; fail=$((fail + 1)); failed+=("$name"); fi
}
pids=()
sftp_base=   # the off-site host's chroot (section 8): outside $run, see there
cleanup() {
  set +e
  ip netns exec "$ns" ssh -o ControlPath="$run/ssh.ctl" -O exit root@$guest_ip >/dev/null 2>&1
  [ -f "$run/qemu.pid" ] && kill "$(cat "$run/qemu.pid")" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  ip netns del "$ns" 2>/dev/null
  if [ "$fail" -ne 0 ] || [ -n "${KEEP:-}" ]; then
    echo "e2e: kept $run (console.log, logs)${sftp_base:+ and $sftp_base (the off-site repository)}"
  else
    rm -rf "$run" ${sftp_base:+"$sftp_base"}
  fi
}
trap cleanup EXIT
trap "exit 143" TERM INT
nsx() { ip netns exec "$ns" "$@"; }

# ---- 1. the guest image, cached by the hash of the script that builds it ----
cache=${NODEAGENT_E2E_CACHE:-/var/cache/nodeagent-e2e}
image=$cache/image-$(sha256sum Tests/e2e/build-image.sh | cut -c1-16)
if [ ! -f "$image/base.raw" ]; then
  log "building the guest image into $image"
  Tests/e2e/build-image.sh "$image" > "$run/build-image.log" 2>&1 || { tail -30 "$run/build-image.log"; exit 1; }
fi
log "guest image: $image"
# Everything the shipped user-data installs must be in the image (the guest has no internet).
for p in $(sed -n '/^packages:/,/^[a-z_]*:/s/^  - //p' deploy/cloud-init/user-data.yaml); do
  grep -qw -- "$p" Tests/e2e/build-image.sh || { echo "e2e: user-data installs $p, which build-image.sh does not put in the image" >&2; exit 1; }
done

# ---- 2. the release binary, as shipped (static Swift runtime), and the stand-in K3s ----
source scripts/deps
for product in nodeagent K3sStandIn; do
  swift build -c release --static-swift-stdlib --product $product > "$run/swift-build.log" 2>&1 || { tail -30 "$run/swift-build.log"; exit 1; }
done
binary=$repo/.build/release/nodeagent
log "release binaries built"

# ---- 3. the host side: a namespace with the guest's tap, a Debian mirror, the binary's
#         download, the desired-state repository (git daemon) and the admin's WireGuard ----
ip netns add "$ns"
nsx ip link set lo up
nsx ip tuntap add dev tap0 mode tap
nsx ip addr add $host_ip/24 dev tap0
nsx ip link set tap0 up

www=$run/www
mkdir -p "$www/debian/dists/bookworm/main/binary-amd64"
: > "$www/debian/dists/bookworm/main/binary-amd64/Packages"
cat > "$www/debian/dists/bookworm/Release" <<EOF
Origin: nodeagent-e2e
Suite: bookworm
Codename: bookworm
Architectures: amd64
Components: main
Date: $(date -Ru)
SHA256:
 $(sha256sum < /dev/null | cut -d' ' -f1) 0 main/binary-amd64/Packages
EOF
cp "$binary" "$www/nodeagent"
sha=$(sha256sum "$www/nodeagent" | cut -d' ' -f1)
# Two stand-in K3s "releases" (K3s's layout: downloadURL/VERSION/k3s): one that gets Ready, one
# that never does. The same executable with its version, behaviour and PKI script appended.
k3s_release() {
  mkdir -p "$www/k3s/$1"
  strip -o "$www/k3s/$1/k3s" "$repo/.build/release/K3sStandIn"
  python3 - "$www/k3s/$1/k3s" "$1" "$2" "$repo/Tests/Fixtures/pki/make.py" <<'EOF'
import json, sys
path, version, mode, pki = sys.argv[1:5]
with open(path, "ab") as f:
    f.write(b"\n#NODEAGENT-K3S-STANDIN#\n" + json.dumps({"version": version, "mode": mode, "pki": open(pki).read()}).encode())
EOF
  sha256sum "$www/k3s/$1/k3s" | cut -d' ' -f1
}
k3s_good=v1.31.4+k3s1 k3s_bad=v1.31.5+k3s1
k3s_good_sha=$(k3s_release $k3s_good good)
k3s_bad_sha=$(k3s_release $k3s_bad bad)
ip netns exec "$ns" python3 -m http.server 8080 --bind $host_ip --directory "$www" > "$run/http.log" 2>&1 &
pids+=($!)

git_root=$run/git work=$run/work
mkdir -p "$git_root"
git init -q --bare --initial-branch=main "$git_root/platform.git"
ip netns exec "$ns" git daemon --reuseaddr --export-all --base-path="$git_root" --listen=$host_ip --port=9418 > "$run/git-daemon.log" 2>&1 &
pids+=($!)

ssh-keygen -q -t ed25519 -N '' -C e2e -f "$run/id_ed25519"
admin_key=$(wg genkey)
admin_pub=$(echo "$admin_key" | wg pubkey)
echo "$admin_key" > "$run/admin.key"

# The off-site host (section 8): OpenSSH's sshd on $host_ip:22, SFTP only, key only, every login
# jailed in a chroot whose /repo is the restic repository (empty: nodeagent initialises it).
# It runs from the start like the rest of the host side; guest A boots with `recover: offsite`
# too, but its desired state declares no spec.backups.offsite yet: a new node, nothing to
# recover. Its keys and the node's secrets are made before the seed because they reach the node
# through the user-data: a replacement node recovers with no manual step.
sftp_dir=$run/sftp
mkdir -m 0700 "$sftp_dir"
ssh-keygen -q -t ed25519 -N '' -C e2e-offsite-host -f "$sftp_dir/host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C e2e-node-offsite -f "$sftp_dir/node_key"
cp "$sftp_dir/node_key.pub" "$sftp_dir/authorized_keys"
echo "$host_ip $(cut -d' ' -f1,2 "$sftp_dir/host_ed25519_key.pub")" > "$sftp_dir/known_hosts"
(
  umask 077
  python3 -c 'import secrets; print(secrets.token_hex(24))' > "$sftp_dir/restic-password"
  python3 -c 'import secrets; print(secrets.token_hex(24))' > "$sftp_dir/pg-password"
)
# ChrootDirectory wants every component of the path owned by root and writable by no one else:
# not under /tmp (1777), so not in $run.
sftp_base=$(mktemp -d /run/nodeagent-e2e-sftp-XXXXXX)
sftp_root=$sftp_base/root
install -d -m 0755 "$sftp_root"
install -d -m 0700 "$sftp_root/repo"
component=$sftp_root
while :; do
  if [ "$(stat -c %u "$component")" != 0 ] || (( 0$(stat -c %a "$component") & 022 )); then
    echo "e2e: $component must be owned by root and not group- or world-writable (sshd's ChrootDirectory)" >&2; exit 1
  fi
  [ "$component" = / ] && break
  component=$(dirname "$component")
done
[ -d /run/sshd ] || install -d -m 0755 /run/sshd   # sshd's privilege separation directory
cat > "$sftp_dir/sshd_config" <<EOF
ListenAddress $host_ip:22
HostKey $sftp_dir/host_ed25519_key
PidFile $run/sftp-sshd.pid
AuthorizedKeysFile $sftp_dir/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
ChrootDirectory $sftp_root
EOF
/usr/sbin/sshd -t -f "$sftp_dir/sshd_config" || { echo "e2e: sshd does not accept $sftp_dir/sshd_config" >&2; exit 1; }
ip netns exec "$ns" /usr/sbin/sshd -D -f "$sftp_dir/sshd_config" -E "$run/sftp-sshd.log" &
pids+=($!)

# ---- 4. the seed, rendered by `nodeagent init` as the README tells users ----
"$binary" init --name e2e --repo "git://$host_ip/platform.git" --endpoint $guest_ip \
  --ssh-key "$(cat "$run/id_ed25519.pub")" --peer "admin=$admin_pub" \
  --binary-url "http://$host_ip:8080/nodeagent" --binary-sha256 "$sha" --recover-offsite --output "$run/init" > "$run/init.log"
git clone -q "$git_root/platform.git" "$work" 2>/dev/null
cp "$run/init/platform.yaml" "$work/platform.yaml"
gitw() { git -C "$work" -c user.name=e2e -c user.email=e2e@example.com "$@"; }
gitw add platform.yaml
gitw commit -q -m "nodeagent init"
gitw push -q origin main
mkdir -p "$run/seed"
# The user-data as rendered, plus what the operator adds for off-site backups (section 8): the
# secrets as write_files entries (base64, 0600), and a runcmd step before nodeagent starts that
# gives the guest's PostgreSQL (the stand-in for the cluster's) the password in pg-password.
# Guest A and its replacement B boot this same file.
cat > "$run/pg-password.sh" <<'EOF'
cd / && systemctl start postgresql && i=0 && until pg_isready -q; do i=$((i + 1)); [ "$i" -lt 120 ] || exit 1; sleep 1; done && { printf "ALTER USER postgres PASSWORD '"; tr -d '\n' < /etc/nodeagent/secrets/pg-password | sed "s/'/''/g"; printf "';\n"; } | runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres
EOF
python3 - "$run/init/user-data.yaml" "$run/seed/user-data" "$sftp_dir" "$run/pg-password.sh" <<'EOF'
import base64, json, re, sys
src, dst, secrets, script = sys.argv[1:5]
text = open(src).read()
# write_files is the top-level key just before runcmd: entries put before "runcmd:" join it.
keys = re.findall(r"(?m)^([a-z_]+):", text)
assert keys.count("runcmd") == 1 and keys[keys.index("runcmd") - 1] == "write_files", keys
files = [("restic-password", "restic-password"), ("offsite-ssh-key", "node_key"),
         ("offsite-known-hosts", "known_hosts"), ("pg-password", "pg-password")]
entries = "".join('  - path: /etc/nodeagent/secrets/%s\n    permissions: "0600"\n    encoding: b64\n    content: %s\n'
                  % (name, base64.b64encode(open("%s/%s" % (secrets, local), "rb").read()).decode()) for name, local in files)
text = text.replace("\nruncmd:\n", "\n" + entries + "runcmd:\n", 1)
anchor = "  - [systemctl, daemon-reload]\n"
assert text.count(anchor) == 1, "no daemon-reload step in runcmd"
text = text.replace(anchor, "  - [sh, -c, %s]\n" % json.dumps(open(script).read().strip()) + anchor, 1)
open(dst, "w").write(text)
EOF
printf 'instance-id: e2e-%s\nlocal-hostname: e2e\n' "$id" > "$run/seed/meta-data"
cat > "$run/seed/network-config" <<EOF
version: 2
ethernets:
  eth0:
    match: {macaddress: "$mac"}
    addresses: [$guest_ip/24]
EOF
genisoimage -quiet -output "$run/seed.iso" -volid cidata -joliet -rock "$run/seed"/*
qemu-img create -q -f qcow2 -F raw -b "$image/base.raw" "$run/disk.qcow2"

# ---- 5. boot ----
boot() {
  nsx qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1536 \
    -nodefaults -display none -monitor none -serial "file:$run/console-$1.log" -pidfile "$run/qemu.pid" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" -append "root=/dev/vda rw console=ttyS0 net.ifnames=0" \
    -drive file="$run/disk.qcow2",if=virtio,format=qcow2,cache=unsafe \
    -drive file="$run/seed.iso",if=virtio,format=raw,readonly=on \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=$mac \
    -device virtio-rng-pci -daemonize
}
# The guest's own poweroff; qemu is killed if it has not exited 30 s later.
power_off() {
  local pid
  g 'systemctl poweroff' >/dev/null 2>&1 || true
  nsx "${SSH[@]}" -O exit >/dev/null 2>&1 || true
  pid=$(cat "$run/qemu.pid" 2>/dev/null) || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.3; done
  kill "$pid" 2>/dev/null || true
  sleep 1
  kill -9 "$pid" 2>/dev/null || true
}
SSH=(ssh -i "$run/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=3
     -o BatchMode=yes -o ControlMaster=auto -o ControlPath="$run/ssh.ctl" -o ControlPersist=600 root@$guest_ip)
g() { nsx "${SSH[@]}" "$@"; }
# Until the key is in authorized_keys (written by nodeagent's os reconciler), SSH is refused.
wait_for_ssh() {
  local limit=$1
  for _ in $(seq 1 "$limit"); do
    g true 2>/dev/null && return 0
    kill -0 "$(cat "$run/qemu.pid")" 2>/dev/null || { log "qemu died"; return 1; }
    sleep 2
  done
  return 1
}
# The tunnel from the host side: wireguard-go with the admin peer's key, the node's public key
# and endpoint from `nodeagent wireguard client-config admin` on the node.
tunnel_up() {
  local config= server endpoint
  # Until the first pass has converged there is no applied revision to read it from.
  for _ in $(seq 1 120); do config=$(g nodeagent wireguard client-config admin 2>/dev/null) && break; sleep 1; done
  [ -n "$config" ] || { log "no client config"; return 1; }
  server=$(sed -n 's/^PublicKey = //p' <<<"$config")
  endpoint=$(sed -n 's/^Endpoint = //p' <<<"$config")
  if ! nsx ip link show "$wg_if" >/dev/null 2>&1; then
    ip netns exec "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f "$wg_if" > "$run/wireguard-go.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do nsx ip link show "$wg_if" >/dev/null 2>&1 && break; sleep 0.1; done
    nsx ip addr add 10.8.0.2/24 dev "$wg_if"
    nsx ip link set "$wg_if" up
  fi
  nsx wg set "$wg_if" private-key "$run/admin.key" peer "$server" endpoint "$endpoint" allowed-ips 10.8.0.0/24 persistent-keepalive 2
}
status() { nsx curl -fsS -m 5 http://10.8.0.1:9430/status; }
converged_at() {   # waits until /status over the tunnel says converged at the repository's HEAD
  local head; head=$(gitw rev-parse HEAD)
  for _ in $(seq 1 "$1"); do
    if status 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["converged"] and s["applied"]["commit"]==sys.argv[1] else 1)' "$head" 2>/dev/null; then
      elapsed; return 0
    fi
    sleep 1
  done
  return 1
}
# A TCP port from the internet side: open (connected), closed (refused at once) or filtered (no answer).
probe() {
  local start rc
  start=$(date +%s.%N)
  nsx timeout 1.5 bash -c "exec 3<>/dev/tcp/$guest_ip/$1" 2>/dev/null && { echo open; return; }
  rc=$?
  [ "$rc" -eq 124 ] && echo filtered || echo closed
}
public_ports_only() {
  local r ok=0
  for p in 22:open 80:closed 443:closed 6443:filtered 9430:filtered 5432:filtered 10250:filtered; do
    r=$(probe "${p%%:*}")
    [ "$r" = "${p#*:}" ] || { log "  tcp/${p%%:*}: $r, expected ${p#*:}"; ok=1; }
  done
  return $ok
}

log "booting the guest"
t_boot=$(elapsed)
since_boot() { echo "$1 - $t_boot" | bc | xargs printf '%.1f'; }
boot 1
wait_for_ssh 150 || { log "no SSH after 300 s"; tail -40 "$run/console-1.log"; exit 1; }
t_ssh=$(since_boot "$(elapsed)")
log "SSH works ${t_ssh} s after power-on: nodeagent installed root's key"
tunnel_up
t_converged=$(converged_at 180) || { log "not converged"; g 'journalctl -u nodeagent --no-pager | tail -40'; exit 1; }
t_converged=$(since_boot "$t_converged")
log "converged ${t_converged} s after power-on (observed through the tunnel)"

# ---- 6. checks ----
schema_valid() {
  local out; out=$(g 'cloud-init schema --system 2>&1') && return 0
  echo "$out" | tail -8 | sed 's/^/  /'; return 1
}
check "the guest's cloud-init accepts the user-data (cloud-init schema --system)" schema_valid
check "cloud-init finished without errors or warnings" g 'cloud-init status --wait >/dev/null; cloud-init status | grep -q "status: done" && ! grep -E "WARNING|Traceback" /var/log/cloud-init.log'
check "nodeagent.service active and enabled" g 'systemctl is-active nodeagent && systemctl is-enabled nodeagent'
check "the binary is the one served, checksum verified by the user-data" g "sha256sum /usr/local/bin/nodeagent | grep -q $sha"
hardened() {
  g bash -s <<'EOF'
pid=$(systemctl show -p MainPID --value nodeagent)
grep -q "^NoNewPrivs:[[:space:]]*1" /proc/$pid/status || { echo "  NoNewPrivs is not set"; exit 1; }
[ "$(grep ^CapBnd /proc/$pid/status | cut -f2)" != "$(grep ^CapBnd /proc/1/status | cut -f2)" ] || { echo "  full capability set"; exit 1; }
awk '$5 == "/" {print $6}' /proc/$pid/mountinfo | grep -q "^ro" || { echo "  / is writable"; exit 1; }
EOF
}
check "hardening in force: no new privileges, a capability bounding set, / read-only" hardened
score=$(g 'systemd-analyze security nodeagent.service 2>/dev/null | sed -n "s/.*Overall exposure level for nodeagent.service: \([0-9.]*\).*/\1/p"')
log "systemd-analyze security nodeagent.service (in the guest): ${score:-?}"
check "exposure score at most 4.5" python3 -c "import sys; sys.exit(0 if 0 < float('${score:-99}') <= 4.5 else 1)"
check "kernel WireGuard: wg0 is a wireguard link, the module is loaded" g 'ip -d link show wg0 | grep -q wireguard && grep -q "^wireguard " /proc/modules'
check "firewall: only 22 (and refused 80/443) answer from the internet" public_ports_only
status_names_head() { status | grep -q "\"$(gitw rev-parse HEAD)\""; }
check "/status through the tunnel names the applied commit" status_names_head
# Read whole, then searched: `curl | grep -q` fails under pipefail once the page outgrows the
# pipe (grep quits at the match, curl cannot finish writing).
metrics_converged() { local page; page=$(nsx curl -fsS -m 5 http://10.8.0.1:9430/metrics) && grep -q '^nodeagent_converged 1' <<<"$page"; }
check "/metrics through the tunnel: converged" metrics_converged
check "the status port does not answer on the public address" test "$(probe 9430)" = filtered

# Commit a new peer and ask for a sync through the tunnel.
extra_pub=$(wg genkey | wg pubkey)
python3 - "$work/platform.yaml" "$extra_pub" <<'EOF'
import sys
path, key = sys.argv[1], sys.argv[2]
text = open(path).read()
marker = "allowedIPs: [10.8.0.2/32]}\n"
assert marker in text, text
text = text.replace(marker, marker + '      - {name: extra, publicKey: "%s", allowedIPs: [10.8.0.3/32]}\n' % key)
open(path, "w").write(text)
EOF
gitw commit -q -am "add peer extra"
gitw push -q origin main
token=$(g cat /etc/nodeagent/secrets/api-token)
t_sync=$(date +%s.%N)
nsx curl -fsS -m 5 -X POST -H "Authorization: Bearer $token" http://10.8.0.1:9430/sync > /dev/null
peer_applied() { for _ in $(seq 1 60); do g wg show wg0 peers | grep -q "$extra_pub" && return 0; sleep 0.5; done; return 1; }
check "a committed peer is configured after POST /sync" peer_applied
t_peer=$(echo "$(date +%s.%N) - $t_sync" | bc | xargs printf '%.1f')
log "commit → POST /sync → peer configured: $t_peer s"
check "the new peer's commit is the applied one" eval 'converged_at 30 > /dev/null'

# kill -9: systemd restarts the agent; it converges without repeating work.
restarts_before=$(g systemctl show -p NRestarts --value nodeagent)
g 'systemctl kill -s KILL --kill-whom=main nodeagent'
restarted() {
  for _ in $(seq 1 60); do
    [ "$(g systemctl show -p NRestarts --value nodeagent)" -gt "$restarts_before" ] && g systemctl is-active -q nodeagent && return 0
    sleep 1
  done
  return 1
}
check "kill -9: systemd restarts nodeagent" restarted
no_repeated_work() {
  converged_at 60 > /dev/null || return 1
  status | python3 -c 'import json,sys; s=json.load(sys.stdin); plans=[c for r in s["reconcilers"] for c in r["lastPlan"]]; print("  changes after the restart:", plans); sys.exit(1 if plans else 0)'
}
check "after the restart it converges with no change to make" no_repeated_work

# Reboot: VPN, firewall and service come back.
g 'systemctl reboot' || true
nsx "${SSH[@]}" -O exit >/dev/null 2>&1 || true
t_reboot=$(elapsed)
sleep 10
wait_for_ssh 150 || { log "no SSH after the reboot"; exit 1; }
tunnel_up
t_back=$(converged_at 180) || t_back=
check "after a reboot: converged through the tunnel again" test -n "$t_back"
check "after a reboot: nodeagent.service active" g systemctl is-active -q nodeagent
check "after a reboot: the firewall is in place" public_ports_only
extra_peer_there() { g wg show wg0 peers | grep -q "$extra_pub"; }
check "after a reboot: the extra peer is still configured" extra_peer_there
[ -n "$t_back" ] && log "reboot → converged: $(echo "$t_back - $t_reboot" | bc | xargs printf '%.1f') s"

# ---- 7. K3s under real systemd (the stand-in), Helm releases and Argo CD into it ----
sync() { nsx curl -fsS -m 5 -X POST -H "Authorization: Bearer $token" http://10.8.0.1:9430/sync > /dev/null; }
commit_k3s() {   # VERSION SHA256: the k3s, helmReleases and argocd sections, before status:
  python3 - "$work/platform.yaml" "$1" "$2" "$host_ip" <<'EOF'
import re, sys
path, version, sha, host = sys.argv[1:5]
text = re.sub(r"(?ms)^  k3s:\n.*?(?=^  status:)", "", open(path).read())
cluster = f"""  k3s:
    version: {version}
    sha256: "{sha}"
    downloadURL: http://{host}:8080/k3s
    readyTimeout: 45s
  helmReleases:
    - {{name: argocd, chart: argo-cd, repo: https://argoproj.github.io/argo-helm, version: 7.7.11, namespace: argocd, values: {{}}}}
  argocd:
    release: argocd
    appOfApps: {{repoURL: https://git.example.com/apps.git, path: apps, targetRevision: main}}
"""
text = text.replace("  status:", cluster + "  status:", 1)
open(path, "w").write(text)
EOF
  gitw commit -q -am "k3s $1"
  gitw push -q origin main
  sync
}
t_k3s=$(elapsed)
commit_k3s $k3s_good "$k3s_good_sha"
t_k3s_done=$(converged_at 300) || t_k3s_done=
check "k3s, helm and argocd converge into the stand-in K3s" test -n "$t_k3s_done"
[ -n "$t_k3s_done" ] && log "commit → K3s installed, Ready, Argo CD released and its root Application applied: $(echo "$t_k3s_done - $t_k3s" | bc | xargs printf '%.1f') s"
k3s_running() { g "systemctl is-active -q k3s && systemctl is-enabled -q k3s && k3s --version | grep -q '$1'"; }
check "k3s.service active under systemd at $k3s_good" k3s_running $k3s_good
cluster_objects() {
  g 'nodeagent kube get helmcharts -n kube-system | grep -q "^argocd " && nodeagent kube get applications -n argocd | grep -q "^root "' ||
    { g 'nodeagent kube get helmcharts -A; nodeagent kube get applications -A' 2>&1 | sed 's/^/  /'; return 1; }
}
check "the HelmChart and the root Application are in the cluster" cluster_objects
commit_k3s $k3s_bad "$k3s_bad_sha"
rolled_back() {
  for _ in $(seq 1 150); do
    status 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); r=[r for r in s["reconcilers"] if r["name"]=="k3s"][0]; print("  k3s:", r["reason"], r["message"]); sys.exit(0 if r["reason"]=="UpgradeRolledBack" else 1)' && return 0
    sleep 2
  done
  return 1
}
check "an upgrade that never gets Ready is rolled back, and /status says why" rolled_back
check "after the rollback k3s.service runs $k3s_good again" k3s_running $k3s_good

# ---- 8. off-site backup (restic over SFTP) and the recovery of a destroyed node ----
# The guest's PostgreSQL stands in for the cluster's. Guest A backs it up to the SFTP host; then
# A is destroyed and B, a fresh disk booted from the same user-data, must come back by itself
# with A's WireGuard identity, applied revision and rows (agent.yaml: recover: offsite).
t_offsite_run='' t_offsite_restore='' t_b_ssh='' t_b_conv='' t_b_rows=''
since() { echo "$2 - $1" | bc | xargs printf '%.1f'; }
# SQL (from stdin) on the guest's PostgreSQL as its superuser, through its Unix socket.
pg() { g "cd / && runuser -u postgres -- psql -X -qtA -v ON_ERROR_STOP=1 -d $1" <<<"$2"; }
fingerprint() { pg app "select count(*) || ' ' || md5(string_agg(id || ':' || v, ',' order by id)) from t"; }
# Guest output shown in this log, with the suite's secrets replaced.
redact() {
  python3 -c '
import sys
d = sys.argv[1]
values = [open(d + "/" + f).read().strip() for f in ("restic-password", "pg-password")]
values += [l for l in open(d + "/node_key").read().splitlines() if l and not l.startswith("-----")]
text = sys.stdin.read()
for v in values:
    if v: text = text.replace(v, "<redacted>")
sys.stdout.write(text)' "$sftp_dir"
}
# The repository as the host sees it on disk: read with its password, without locking or caching.
restic_host() {
  env -u RESTIC_PASSWORD -u RESTIC_PASSWORD_COMMAND -u RESTIC_REPOSITORY RESTIC_PASSWORD_FILE="$sftp_dir/restic-password" \
    restic -r "$sftp_root/repo" --no-cache --no-lock "$@"
}
snapshots() {   # the ids of the snapshots tagged node:e2e, oldest first; fails while there is no repository
  local out
  out=$(restic_host snapshots --json --tag node:e2e 2>>"$run/restic-host.log") || return 1
  python3 -c 'import json,sys; [print(s["id"]) for s in sorted(json.load(sys.stdin) or [], key=lambda s: s["time"])]' <<<"$out"
}
# `nodeagent backup ARGS` on the guest, output in $run/NAME.log; retried while another backup
# job (the daemon's scheduler) holds the backups' lock.
g_backup() {
  local name=$1 rc=0; shift
  for _ in $(seq 1 60); do
    rc=0
    g nodeagent backup "$@" > "$run/$name.log" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] && return 0
    grep -q "another backup, drill or restore is running" "$run/$name.log" || break
    sleep 3
  done
  redact < "$run/$name.log" | tail -15 | sed 's/^/  /'
  return "$rc"
}
journal_tail() { g 'journalctl -u nodeagent --no-pager | tail -40' 2>&1 | redact | sed 's/^/  /' || true; }

sftp_lists_repo() {
  nsx sftp -F /dev/null -i "$sftp_dir/node_key" -o IdentitiesOnly=yes -o UserKnownHostsFile="$sftp_dir/known_hosts" \
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5 -b - root@$host_ip <<<"ls /repo" > "$run/sftp-check.log" 2>&1 ||
    { tail -5 "$run/sftp-check.log" "$run/sftp-sshd.log" | sed 's/^/  /'; return 1; }
}
check "the off-site host: sshd, key only, chrooted; sftp with the node's key and the pinned host key lists /repo" sftp_lists_repo
recover_configured() {
  grep -qx '      recover: offsite' "$run/init/user-data.yaml" && g "grep -qx 'recover: offsite' /etc/nodeagent/agent.yaml"
}
check "init --recover-offsite: the user-data's agent.yaml, as on the node, says recover: offsite" recover_configured
secrets_in_place() {
  g 'cd /etc/nodeagent/secrets && [ "$(stat -c %a .)" = 700 ] &&
     for f in restic-password offsite-ssh-key offsite-known-hosts pg-password; do [ "$(stat -c "%a %U" $f)" = "600 root" ] || exit 1; done'
}
check "the off-site secrets from the user-data are on the node: 0600 root, in a 0700 directory" secrets_in_place
pg_password_works() {
  g 'PGPASSWORD=$(cat /etc/nodeagent/secrets/pg-password) psql -X -qtA -h 127.0.0.1 -U postgres -d postgres -c "select 1"' 2>/dev/null | grep -qx 1
}
check "the guest's PostgreSQL takes pg-password over 127.0.0.1 (set by the user-data's runcmd)" pg_password_works

# The rows first: the daemon's scheduler runs a job that never ran as soon as spec.backups is
# applied, and that first job should find the database.
make_rows() {
  pg postgres "create database app" >/dev/null &&
    pg app "create table t as select g id, md5(g::text) v from generate_series(1, 5000) g" >/dev/null
}
check "database app with a table of 5000 rows in the guest's PostgreSQL" make_rows
fp=$(fingerprint 2>/dev/null) || fp=
log "app.t: ${fp:-unreadable} (rows, md5 of every row in order)"

# The K3s section left a rolled-back version in spec: the good one back, then spec.backups.
commit_k3s $k3s_good "$k3s_good_sha"
t_good=$(converged_at 300) || t_good=
check "the good K3s version committed back: converged" test -n "$t_good"
python3 - "$work/platform.yaml" "$host_ip" <<'EOF'
import sys
path, host = sys.argv[1:3]
text = open(path).read()
assert "\n  backups:" not in text and text.count("\n  status:") == 1, text
backups = f"""  backups:
    postgres:
      connection: {{host: 127.0.0.1, user: postgres, passwordFile: /etc/nodeagent/secrets/pg-password}}
      databases: [app]
      schedule: "0 3 1 1 *"       # yearly: no scheduled run may land between the suite's own steps
    offsite:
      repository: sftp:root@{host}:/repo
      passwordFile: /etc/nodeagent/secrets/restic-password
      sshKeyFile: /etc/nodeagent/secrets/offsite-ssh-key
      knownHostsFile: /etc/nodeagent/secrets/offsite-known-hosts
"""
open(path, "w").write(text.replace("\n  status:", "\n" + backups + "  status:", 1))
EOF
gitw commit -q -am "backups: PostgreSQL app, off-site over SFTP"
gitw push -q origin main
sync
t_backups=$(converged_at 180) || t_backups=
check "spec.backups with postgres and offsite: converged" test -n "$t_backups"
[ -n "$t_backups" ] || journal_tail

daemon_backup_done() {   # the scheduler's first job has run and let go of the lock
  for _ in $(seq 1 120); do
    g 'grep -q "\"lastBackupRun\"" /var/lib/nodeagent/backups/state.json && flock -n /var/lib/nodeagent/backups/lock true' 2>/dev/null && return 0
    sleep 2
  done
  return 1
}
check "the daemon ran its first scheduled backup by itself" daemon_backup_done
offsite_has_snapshot() {
  local ids
  for _ in $(seq 1 30); do ids=$(snapshots) && [ -n "$ids" ] && return 0; sleep 2; done
  tail -3 "$run/restic-host.log" 2>/dev/null | sed 's/^/  /'
  g 'journalctl -u nodeagent --no-pager | grep -i -E "backup|restic|offsite|off-site" | tail -15' 2>&1 | redact | sed 's/^/  /'
  return 1
}
check "that backup, run in the service's sandbox, reached the off-site repository" offsite_has_snapshot

snaps_before=$(snapshots) || snaps_before=
t_start=$(elapsed)
check "nodeagent backup run: dumps, then restic over SFTP; exit status 0" g_backup backup-run run
t_offsite_run=$(since "$t_start" "$(elapsed)")
log "nodeagent backup run (dump and off-site copy): ${t_offsite_run} s"
snaps_after=$(snapshots) || snaps_after=
newest=$(tail -n 1 <<<"$snaps_after")
new_snapshot() { [ -n "$newest" ] && ! grep -qx -- "$newest" <<<"$snaps_before"; }
check "read from the host with its password, the repository has a new snapshot tagged node:e2e" new_snapshot
listed_offsite() {
  [ -n "$newest" ] && g nodeagent backup list --offsite > "$run/backup-list.log" 2>&1 && grep -q "${newest:0:8}" "$run/backup-list.log" ||
    { redact < "$run/backup-list.log" | tail -10 | sed 's/^/  /'; return 1; }
}
check "nodeagent backup list --offsite shows that snapshot" listed_offsite

# The issue's "done when": no local dump left, the database gone, restored from off-site.
restore_from_offsite() {
  g 'rm -rf /var/backups/nodeagent/postgres' && pg postgres "drop database app" >/dev/null || return 1
  [ -z "$(pg postgres "select 1 from pg_database where datname = 'app'")" ] || { log "  app was not dropped"; return 1; }
  g_backup backup-restore restore --from offsite:app --to app
}
t_start=$(elapsed)
check "local dumps deleted, app dropped: nodeagent backup restore --from offsite:app --to app; exit status 0" restore_from_offsite
t_offsite_restore=$(since "$t_start" "$(elapsed)")
same_rows() {
  local now; now=$(fingerprint 2>/dev/null) || now=
  [ -n "$fp" ] && [ "$now" = "$fp" ] || { log "  app.t: ${now:-missing}, expected ${fp:-?}"; return 1; }
}
check "the restored rows are the ones backed up (count, md5 of every row)" same_rows

# Destroy guest A: power off, delete its disk. Guest B: a new disk from the base image, the same
# seed (byte for byte the same user-data), the same MAC and address; a new SSH host key.
a_wg_pub=$(g wg show wg0 public-key 2>/dev/null) || a_wg_pub=
a_commit=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["applied"]["commit"])' 2>/dev/null) || a_commit=
log "guest A: WireGuard public key ${a_wg_pub:-?}, applied commit ${a_commit:-?}"
power_off
rm -f "$run/disk.qcow2"
qemu-img create -q -f qcow2 -F raw -b "$image/base.raw" "$run/disk.qcow2"
log "guest A destroyed (powered off, disk deleted); booting guest B from a fresh disk and the same seed"
t_boot_b=$(elapsed)
boot 2
b_ssh=0
wait_for_ssh 150 && b_ssh=1
check "guest B: SSH with the key nodeagent installed" test "$b_ssh" = 1
if [ "$b_ssh" = 1 ]; then
  t_b_ssh=$(since "$t_boot_b" "$(elapsed)")
  log "guest B: SSH ${t_b_ssh} s after power-on"
  wg_key() { local k; for _ in $(seq 1 60); do k=$(g wg show wg0 public-key 2>/dev/null) && [ -n "$k" ] && { echo "$k"; return 0; }; sleep 1; done; return 1; }
  b_wg_pub=$(wg_key) || b_wg_pub=
  check "guest B's WireGuard key is guest A's (restored before wg0 came up)" test "${b_wg_pub:-none}" = "${a_wg_pub:-unknown}"
  check "guest B: the tunnel comes up from its client config" tunnel_up
  client_config_key() { local k; k=$(g nodeagent wireguard client-config admin 2>/dev/null | sed -n 's/^PublicKey = //p'); [ "${k:-none}" = "${a_wg_pub:-unknown}" ]; }
  check "guest B's client config carries A's public key (the admin's config still works)" client_config_key
  t_b_conv=$(converged_at 420) || t_b_conv=
  check "guest B: converged at the repository's HEAD, seen through the tunnel" test -n "$t_b_conv"
  if [ -n "$t_b_conv" ]; then
    t_b_conv=$(since "$t_boot_b" "$t_b_conv")
    log "guest B power-on → converged with A's identity: ${t_b_conv} s"
  else
    journal_tail
  fi
  b_commit() { status | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["applied"]["commit"] == sys.argv[1] else 1)' "${a_commit:-unknown}"; }
  check "guest B: /status names A's applied commit" b_commit
  rows_back() {
    local now=
    for _ in $(seq 1 60); do
      now=$(fingerprint 2>/dev/null) || now=
      [ -n "$fp" ] && [ "$now" = "$fp" ] && { elapsed; return 0; }
      sleep 2
    done
    log "  app.t on B: ${now:-missing}, expected ${fp:-?}" >&2
    return 1
  }
  t_b_rows=$(rows_back) || t_b_rows=
  check "guest B: database app is back with A's rows, restored from off-site by itself" test -n "$t_b_rows"
  if [ -n "$t_b_rows" ]; then
    t_b_rows=$(since "$t_boot_b" "$t_b_rows")
    log "guest B power-on → database rows back: ${t_b_rows} s"
  fi
  check "guest B: nodeagent's journal tells of the recovery" g 'journalctl -u nodeagent --no-pager | grep -qi recover'
  check "guest B: cloud-init finished without errors or warnings (the same user-data as A)" g 'cloud-init status --wait >/dev/null; cloud-init status | grep -q "status: done" && ! grep -E "WARNING|Traceback" /var/log/cloud-init.log'
  check "guest B: nodeagent.service active" g systemctl is-active -q nodeagent
  check "guest B: the firewall is in place" public_ports_only
  no_secret_exposed() {
    g 'journalctl -u nodeagent --no-pager' > "$run/b-journal.txt" 2>&1 && status > "$run/b-status.json" 2>&1 &&
      nsx curl -fsS -m 5 http://10.8.0.1:9430/metrics > "$run/b-metrics.txt" 2>&1 || { log "  could not read the journal, /status or /metrics"; return 1; }
    g 'cat /etc/nodeagent/secrets/wg0.key /etc/nodeagent/secrets/api-token' > "$run/b-identity.txt" 2>/dev/null || { log "  could not read B's key and token"; return 1; }
    python3 - "$sftp_dir" "$run/b-identity.txt" "$run/b-journal.txt" "$run/b-status.json" "$run/b-metrics.txt" <<'EOF'
import sys
d, identity, places = sys.argv[1], sys.argv[2], sys.argv[3:]
def body(f): return [l for l in open(f).read().splitlines() if l and not l.startswith("-----")]
# Lines every unencrypted ed25519 key file shares (the format's header) say nothing of this key.
generic = set(body(d + "/host_ed25519_key"))
secrets = {"the restic password": open(d + "/restic-password").read().strip(),
           "the PostgreSQL password": open(d + "/pg-password").read().strip(),
           "the SFTP private key's body": "".join(body(d + "/node_key"))}
wg, token = (open(identity).read().split("\n") + ["", ""])[:2]
secrets.update({"the WireGuard private key": wg.strip(), "the API token": token.strip()})
secrets.update(("line %d of the SFTP private key" % (i + 1), l) for i, l in enumerate(body(d + "/node_key")) if l not in generic)
bad = 0
for place in places:
    text = open(place, errors="replace").read()
    for name, value in secrets.items():
        if value and value in text:
            print("  %s appears in %s" % (name, place.rsplit("/", 1)[-1]))
            bad = 1
sys.exit(bad)
EOF
  }
  check "guest B: no secret (restic and PostgreSQL passwords, SFTP key, WireGuard key, API token) in nodeagent's journal, /status or /metrics" no_secret_exposed
else
  tail -40 "$run/console-2.log" | redact || true
fi

power_off

summary="power-on → SSH ${t_ssh} s, → converged ${t_converged} s; replacement node: → converged ${t_b_conv:-?} s, → rows back ${t_b_rows:-?} s; $pass checks passed, $fail failed in $(elapsed) s"
echo "e2e: $summary"
if [ "$record" = 1 ] && [ "$fail" -eq 0 ]; then
  {
    echo
    echo "## e2e: fresh Debian 12 guest, cloud-init → converged — $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/{print $2}') GiB, Linux $(uname -r); guest under QEMU TCG (software emulation), 2 vCPUs, 1.5 GiB. Command: \`scripts/e2e --record\`."
    echo
    echo "| step | time | target |"
    echo "|---|---|---|"
    echo "| power-on → SSH with the key nodeagent installed | ${t_ssh} s | |"
    echo "| power-on → converged (seen through WireGuard) | ${t_converged} s | ≤ 5 min: $(python3 -c "print('met' if float('$t_converged') <= 300 else 'missed')") |"
    [ -n "$t_back" ] && echo "| reboot → converged | $(echo "$t_back - $t_reboot" | bc | xargs printf '%.1f') s | |"
    echo "| commit → POST /sync → peer configured | ${t_peer} s | |"
    [ -n "$t_k3s_done" ] && echo "| commit → K3s downloaded (61 MiB), Ready, Helm release and root Application applied | $(echo "$t_k3s_done - $t_k3s" | bc | xargs printf '%.1f') s | |"
    [ -n "$t_offsite_run" ] && echo "| \`nodeagent backup run\`: dump, then restic over SFTP to the off-site host | ${t_offsite_run} s | |"
    [ -n "$t_offsite_restore" ] && echo "| dumps deleted, database dropped → \`backup restore --from offsite:app\` (5000 rows) | ${t_offsite_restore} s | |"
    [ -n "$t_b_conv" ] && echo "| destroyed node: its replacement's power-on → converged with the old WireGuard identity (\`recover: offsite\`) | ${t_b_conv} s | |"
    [ -n "$t_b_rows" ] && echo "| destroyed node: its replacement's power-on → database rows back from off-site | ${t_b_rows} s | |"
    echo "| the whole suite (image cached, binaries built) | $(elapsed) s | |"
  } >> BENCHMARKS.md
fi
[ "$fail" -eq 0 ] || { echo "e2e: failed: ${failed[*]}" >&2; exit 1; }
