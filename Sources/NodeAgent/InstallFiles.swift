import ArgumentParser
import YAML

/// The install files: the systemd unit and the cloud-init user-data. `nodeagent init` writes
/// them for a node; `deploy/systemd/nodeagent.service` and `deploy/cloud-init/user-data.yaml`
/// are these texts (with REPLACE_ME placeholders), and a test keeps them equal.
enum InstallFiles {
    static let unit = """
# nodeagent: converges this node from its Git-pinned desired state and answers on the
# WireGuard address. Installed by deploy/cloud-init/user-data.yaml.
[Unit]
Description=nodeagent - converges this node to its desired state
Documentation=https://git.example.com/nodeagent#readme
Wants=network-online.target
After=network-online.target nftables.service

[Service]
Type=simple
ExecStart=/usr/local/bin/nodeagent run --config /etc/nodeagent/agent.yaml
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
TimeoutStopSec=90s
# The firewall's revert timer and wireguard-go are started by nodeagent and must outlive a
# restart of it (a revert must fire even if nodeagent dies): only the main process is stopped.
KillMode=process

# Hardening, as far as the job allows. It manages nftables, WireGuard, sysctl, sshd's drop-in
# and authorized_keys, K3s's binary and config: those paths stay writable, the rest is read-only.
ProtectSystem=strict
# Directories it writes into that a fresh VPS lacks: made before the sandbox is set up (a
# ReadWritePaths= entry that does not exist at start would stay read-only).
ExecStartPre=+/usr/bin/install -d -m 0700 /var/backups/nodeagent /var/lib/nodeagent /root/.ssh
ExecStartPre=+/usr/bin/install -d -m 0755 /etc/rancher /var/lib/rancher
# "-": paths that may not exist yet (no backups, no K3s, no SSH user keys on a fresh VPS).
ReadWritePaths=/etc/nodeagent /var/lib/nodeagent /etc/sysctl.d /usr/local/bin /etc/systemd/system /run
ReadWritePaths=-/var/backups/nodeagent -/etc/wireguard -/etc/ssh/sshd_config.d -/root/.ssh -/home -/etc/rancher
# K3s's datastore and token: read for the off-site copy (sqlite3 writes the WAL's index beside
# it), written by a recovery from it.
ReadWritePaths=-/var/lib/rancher
PrivateTmp=yes
NoNewPrivileges=yes
ProtectClock=yes
ProtectHostname=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictNamespaces=yes
PrivateMounts=yes
ProtectProc=invisible
# /dev/net/tun for wireguard-go; the standard pseudo devices come with "closed".
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
SystemCallArchitectures=native
SystemCallFilter=@system-service @network-io @privileged
SystemCallFilter=~@reboot @swap @raw-io @clock @obsolete @cpu-emulation @debug
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# NET_ADMIN: nftables, interfaces, net.* sysctls. SYS_MODULE: loading the wireguard module.
# CHOWN/FOWNER/DAC_OVERRIDE: authorized_keys owned by the SSH user. KILL: the revert timer.
# SYS_ADMIN: sysctls outside net.* (kernel.*, vm.*).
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_MODULE CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_KILL CAP_SYS_ADMIN
UMask=0077
# Status-server clients are capped (16 per address, 256 in all); the reconcile loop keeps the rest.
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""
        + "\n"

    /// The user-data for one node. The placeholders stay when a value is not given.
    static func userData(repo: String = "REPLACE_ME_REPOSITORY_URL", ref: String = "main",
                         binaryURL: String = "REPLACE_ME_BINARY_URL", sha256: String = "REPLACE_ME_SHA256", recoverOffsite: Bool = false) -> String {
        let indentedUnit = unit.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            .map { $0.isEmpty ? "" : "      " + $0 }.joined(separator: "\n") + "\n"
        return head(repo: repo, ref: ref, recoverOffsite: recoverOffsite) + "  - path: /etc/systemd/system/nodeagent.service\n    permissions: \"0644\"\n    content: |\n"
            + indentedUnit + runcmd(binaryURL: binaryURL, sha256: sha256)
    }

    private static func head(repo: String, ref: String, recoverOffsite: Bool) -> String {
        "" + """
#cloud-config
# Installs nodeagent on a fresh Debian 12 VPS: packages, the binary (checksummed), the agent
# config, the secrets directory and a random API token, and the hardened systemd unit.
# Before use, replace every REPLACE_ME: the binary's URL and sha256, and the repository of
# your platform.yaml. Then, over WireGuard: curl http://10.8.0.1:9430/status
package_update: true
packages:
  - nftables
  - wireguard-tools
  - wireguard-go
  - openssh-server
  - git
  - curl
  - ca-certificates
  - libcurl4
  - libyaml-0-2
  - libpq5
  - postgresql-client
  - qrencode
  - restic
  - sqlite3
write_files:
  - path: /etc/nodeagent/agent.yaml
    permissions: "0600"
    content: |
      apiVersion: nodeagent/v1
      kind: AgentConfig
      source:
        repo: \(JSONValue.string(repo).jsonText)
        ref: \(JSONValue.string(ref).jsonText)
        path: platform.yaml
      intervals: {poll: 60s, drift: 5m}
      stateDirectory: /var/lib/nodeagent
      kubeconfig: /etc/rancher/k3s/k3s.yaml
""" + (recoverOffsite ? "\n      # A replacement VPS restores the node from spec.backups.offsite before its first pass.\n      recover: offsite" : "") + "\n"
    }

    /// The download line, every value single-quoted for sh (a presigned URL's `&` stays
    /// part of the URL); the line itself goes into the YAML as a JSON string.
    static func download(binaryURL: String, sha256: String) -> String {
        let temp = "/usr/local/bin/nodeagent.download"
        return "curl -fsSL --globoff --max-filesize 268435456 -o \(temp) \(shellQuoted(binaryURL)) && echo \(shellQuoted("\(sha256)  \(temp)")) | sha256sum -c - "
            + "&& install -m 0755 \(temp) /usr/local/bin/nodeagent && rm -f \(temp)"
    }

    static func shellQuoted(_ text: String) -> String { "'" + text.replacing("'", with: "'\\''") + "'" }

    /// `--binary-url` and `--binary-sha256` as `init` accepts them: an http(s) URL without
    /// spaces or control characters, and 64 hexadecimal digits (or the placeholders).
    static func checkBinary(url: String, sha256: String) throws(ValidationError) {
        if !url.hasPrefix("REPLACE_ME") {
            guard url.hasPrefix("https://") || url.hasPrefix("http://"),
                  !url.contains(where: { $0.isWhitespace || ($0.asciiValue.map { $0 < 0x20 || $0 == 0x7F } ?? true) }) else {
                throw ValidationError("--binary-url must be an http(s) URL without spaces, control or non-ASCII characters")
            }
        }
        if !sha256.hasPrefix("REPLACE_ME") {
            guard sha256.count == 64, sha256.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw ValidationError("--binary-sha256 must be 64 lowercase hexadecimal digits (the output of sha256sum)")
            }
        }
    }

    private static func runcmd(binaryURL: String, sha256: String) -> String {
        "" + """
runcmd:
  - [install, -d, -m, "0700", /etc/nodeagent/secrets]
  - [install, -d, -m, "0700", /var/lib/nodeagent]
  - [sh, -c, "umask 077 && head -c 32 /dev/urandom | base64 > /etc/nodeagent/secrets/api-token"]
  - [sh, -c, \(JSONValue.string(download(binaryURL: binaryURL, sha256: sha256)).jsonText)]
  - [systemctl, daemon-reload]
  - [systemctl, enable, --now, nodeagent.service]
""" + "\n"
    }
}
