#!/usr/bin/env bash
# Benchmark: a no-op pass of the os, firewall and wireguard reconcilers on a converged node
# (real nft, wireguard-go, 20 peers) — target <= 30 ms median — side by side with an Ansible
# playbook doing the same work (template + apply-if-changed for the nft file, the WireGuard
# config with `wg syncconf`, the sshd drop-in validated by `sshd -t`, the sysctl drop-in).
# Everything runs in a network namespace and temp roots this script creates and removes.
# ansible-core comes from PyPI into a throwaway virtualenv (the tests never need it).
# Appends the results with the machine and date to BENCHMARKS.md. Run: bench/host-noop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps
source bench/lib.sh
for tool in hyperfine nft wg wireguard-go sshd; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine nftables wireguard-tools wireguard-go openssh-server python3-venv; break; }
done
swift build -c release --static-swift-stdlib --product nodeagent
bin=$PWD/.build/release/nodeagent
bench_namespace nab

venv=$work/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q ansible-core
ansible_version=$("$venv/bin/ansible" --version | head -1)

# A node root shared by both tools: sshd config with a host key, so `sshd -t` can run.
for root in "$work/na" "$work/ansible"; do
  mkdir -p "$root/etc/ssh/sshd_config.d"
  ssh-keygen -q -t ed25519 -N "" -f "$root/etc/ssh/ssh_host_ed25519_key"
  printf 'HostKey %s/etc/ssh/ssh_host_ed25519_key\nInclude /etc/ssh/sshd_config.d/*.conf\n' "$root" > "$root/etc/ssh/sshd_config"
done
python3 - "$work/platform.yaml" "$iface" <<'PY'
import os, base64, hashlib, sys
path, iface = sys.argv[1], sys.argv[2]
peers = "\n".join(
    f"      - {{name: peer-{i}, publicKey: \"{base64.b64encode(hashlib.sha256(b'p%d' % i).digest()).decode()}\", allowedIPs: [10.8.0.{i + 2}/32]}}"
    for i in range(20))
open(path, "w").write(f"""apiVersion: nodeagent/v1
kind: Platform
metadata: {{name: bench}}
spec:
  os:
    ssh:
      port: 22
      authorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJyusluo6f+skZyxlCrGC9pbW+J0mbl297SaO3yWJ6Fk bench@example"]
    sysctl: {{net.ipv4.ip_forward: "1", net.ipv4.conf.all.rp_filter: "2"}}
  firewall:
    publicInterface: eth0
    vpnOnly: {{tcp: [6443, 9430, 5432]}}
  wireguard:
    interface: {iface}
    address: 10.8.0.1/24
    implementation: userspace
    privateKeyFile: /etc/nodeagent/secrets/wg.key
    peers:
{peers}
""")
PY
noop=(ip netns exec "$ns" "$bin" apply --state "$work/platform.yaml" --root "$work/na" --only os,firewall,wireguard)
# sshd -t needs /run/sshd, which a private /run provides; wireguard-go's control socket must
# live in the real /run, so the first passes are split.
private_run=(unshare -m sh -c 'mount -t tmpfs tmpfs /run && mkdir /run/sshd && exec "$@"' sh)
ip netns exec "$ns" "$bin" apply --state "$work/platform.yaml" --root "$work/na" --only firewall,wireguard > /dev/null
ip netns exec "$ns" "${private_run[@]}" "$bin" apply --state "$work/platform.yaml" --root "$work/na" --only os > /dev/null
"${noop[@]}" > /dev/null   # converged: this pass changes nothing

# The same work as an Ansible playbook, with the files nodeagent rendered as its templates.
root=$work/ansible
cp "$work/na/etc/sysctl.d/90-nodeagent.conf" "$work/sysctl.conf"
cp "$work/na/etc/ssh/sshd_config.d/10-nodeagent.conf" "$work/sshd.conf"
cp "$work/na/var/lib/nodeagent/firewall/applied.nft" "$work/table.nft"
( printf 'table inet nodeagent\ndelete table inet nodeagent\n'; cat "$work/table.nft" ) > "$work/nft.txn"
wgkey=$(cat "$work/na/etc/nodeagent/secrets/wg.key")
( printf '[Interface]\nPrivateKey = %s\nListenPort = 51820\n' "$wgkey"
  grep -E '^\[Peer\]|^PublicKey|^AllowedIPs|^$' "$work/na/etc/wireguard/$iface.conf" | sed -n '/\[Peer\]/,$p' ) > "$work/wg.conf"
# The same check nodeagent makes: the candidate drop-in first, then the node's own config.
cat > "$work/check-sshd" <<SH
#!/bin/sh
printf 'Include %s\nInclude %s\n' "\$1" "$root/etc/ssh/sshd_config" > "$work/sshd-check.conf"
exec sshd -t -f "$work/sshd-check.conf"
SH
chmod +x "$work/check-sshd"
cat > "$work/play.yml" <<YML
- hosts: localhost
  gather_facts: false
  tasks:
    - name: nft ruleset
      tags: [net]
      ansible.builtin.template: {src: "$work/nft.txn", dest: "$root/etc/nftables.d/nodeagent.nft", mode: "0600"}
      notify: load nft
    - name: wireguard config
      tags: [net]
      ansible.builtin.template: {src: "$work/wg.conf", dest: "$root/etc/wireguard/$iface.sync", mode: "0600"}
      notify: sync wireguard
    - name: sshd drop-in
      tags: [os]
      ansible.builtin.template: {src: "$work/sshd.conf", dest: "$root/etc/ssh/sshd_config.d/10-nodeagent.conf", mode: "0644", validate: "$work/check-sshd %s"}
    - name: sysctl drop-in
      tags: [os]
      ansible.builtin.template: {src: "$work/sysctl.conf", dest: "$root/etc/sysctl.d/90-nodeagent.conf", mode: "0644"}
      notify: apply sysctl
  handlers:
    - {name: load nft, ansible.builtin.command: "nft -f $root/etc/nftables.d/nodeagent.nft"}
    - {name: sync wireguard, ansible.builtin.command: "wg syncconf $iface $root/etc/wireguard/$iface.sync"}
    - {name: apply sysctl, ansible.builtin.command: "sysctl -p $root/etc/sysctl.d/90-nodeagent.conf"}
YML
mkdir -p "$root/etc/nftables.d" "$root/etc/wireguard" "$root/etc/sysctl.d"
ansible_run=(env ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False
             "$venv/bin/ansible-playbook" -i localhost, -c local -e "ansible_python_interpreter=$venv/bin/python" "$work/play.yml")
ip netns exec "$ns" "${ansible_run[@]}" --tags net > "$work/ansible.log" || { cat "$work/ansible.log" >&2; exit 1; }
ip netns exec "$ns" "${private_run[@]}" "${ansible_run[@]}" --tags os > "$work/ansible.log" || { cat "$work/ansible.log" >&2; exit 1; }
ansible=(ip netns exec "$ns" "${ansible_run[@]}")
"${ansible[@]}" | grep 'changed=0' > /dev/null || { echo "the Ansible run did not converge" >&2; exit 1; }

hyperfine -N --warmup 3 --runs 40 --export-json "$work/na.json" "${noop[*]}" > /dev/null
hyperfine -N --warmup 1 --runs 5 --export-json "$work/ansible.json" "${ansible[*]}" > /dev/null
hyperfine -N --warmup 3 --runs 40 --export-json "$work/netns.json" "ip netns exec $ns true" > /dev/null
hyperfine -N --warmup 3 --runs 40 --export-json "$work/start.json" "$bin version" > /dev/null
# The pass itself, as the daemon runs it (no process start): the engine's own timing, -o json.
for _ in $(seq 40); do "${noop[@]}" -o json 2>/dev/null; echo; done > "$work/passes.jsonl"
python3 - "$work" "$ansible_version" <<'PY' | tee -a BENCHMARKS.md
import os, json, sys, datetime, platform, subprocess
w, ansible = sys.argv[1], sys.argv[2]
def r(name):
    x = json.load(open(f"{w}/{name}.json"))["results"][0]
    return x["median"] * 1000, x["min"] * 1000, x["max"] * 1000
machine = os.environ["BENCH_MACHINE"]
na, an, ns, start = r("na"), r("ansible"), r("netns"), r("start")
passes = sorted(sum(e["seconds"] for e in json.loads(l)["reconcilers"]) * 1000 for l in open(f"{w}/passes.jsonl") if l.strip())
pm = passes[len(passes) // 2]
print(f"\n## no-op pass of os + firewall + wireguard (20 peers) vs Ansible — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
print(f"Machine: {machine}. Command: `bench/host-noop.sh` "
      f"(release build, in a network namespace with wireguard-go; {ansible}).\n")
print("| run | median | min | max |")
print("|---|---|---|---|")
print(f"| `nodeagent apply --only os,firewall,wireguard`, converged | {na[0]:.1f} ms | {na[1]:.1f} ms | {na[2]:.1f} ms |")
print(f"| `ansible-playbook` of the same 4 templates + handlers, converged | {an[0]:.0f} ms | {an[1]:.0f} ms | {an[2]:.0f} ms |")
print(f"| `ip netns exec` alone (included in both) | {ns[0]:.1f} ms | {ns[1]:.1f} ms | {ns[2]:.1f} ms |")
print(f"| `nodeagent version` (process start, included in the first row) | {start[0]:.1f} ms | {start[1]:.1f} ms | {start[2]:.1f} ms |")
print(f"| the pass itself, in process (engine timing of os + firewall + wireguard, 40 runs) | {pm:.1f} ms | {passes[0]:.1f} ms | {passes[-1]:.1f} ms |")
print(f"\nTarget ≤ 30 ms median for a no-op pass: in process (as the daemon runs it) {'met' if pm <= 30 else 'MISSED'}; "
      f"as a whole CLI command, process start and `ip netns exec` included, {'met' if na[0] <= 30 else 'MISSED'}. "
      f"Ratio Ansible / nodeagent CLI: {an[0] / na[0]:.0f}× (target ≥ 50×: {'met' if an[0] / na[0] >= 50 else 'MISSED'}).")
PY
