#!/usr/bin/env python3
"""Writes a large, valid desired state: N WireGuard peers and M Helm releases."""
import base64, hashlib, sys

peers, releases = int(sys.argv[1]), int(sys.argv[2])
out = ["apiVersion: nodeagent/v1", "kind: Platform", "metadata: {name: bench}", "spec:",
       "  firewall:", "    publicInterface: eth0", "    public: {tcp: [22, 80, 443], udp: [51820]}",
       "    vpnOnly: {tcp: [6443, 9430, 5432]}",
       "  wireguard:", "    address: 10.8.0.1/16", "    endpoint: vps.example.com", "    peers:"]
for i in range(peers):
    key = base64.b64encode(hashlib.sha256(b"peer-%d" % i).digest()).decode()
    out.append(f"      - {{name: peer-{i}, publicKey: \"{key}\", allowedIPs: [10.8.{i // 250 + 1}.{i % 250 + 2}/32], persistentKeepalive: 25}}")
out += ["  k3s:", "    version: v1.31.4+k3s1", "    sha256: \"" + "ab" * 32 + "\"", "    tlsSANs: [10.8.0.1]", "  helmReleases:"]
for i in range(releases):
    out += [f"    - name: release-{i}", f"      chart: chart-{i}", "      repo: https://charts.example.com/stable",
            f"      version: 1.{i}.0", f"      namespace: ns-{i % 10}", "      values:",
            "        replicaCount: 2", "        image: {repository: registry.example.com/app, tag: \"1.2.3\", pullPolicy: IfNotPresent}",
            "        resources: {limits: {cpu: 500m, memory: 256Mi}, requests: {cpu: 100m, memory: 128Mi}}",
            "        ingress: {enabled: true, hosts: [{host: app.example.com, paths: [{path: /, pathType: Prefix}]}]}",
            "        env: [{name: MODE, value: production}, {name: LOG_LEVEL, value: info}]"]
print("\n".join(out))
